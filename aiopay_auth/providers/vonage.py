"""Vonage Contact Center (VCC) Payment API.

Client credentials (or the password grant) against the account region's
identity server, form-encoded, with scope ``globalpci`` for the Payment API.
Client credentials go in the body or as HTTP Basic. VCC's token type is
sometimes ``bearer`` in lower case and its lifetime varies between
documents (3600 s, 7200 s): the SDK trusts ``expires_in``.

VCC has two gateways. The current one, ``https://{region}.cc.vonage.com``,
serves both the token endpoint and the APIs; the legacy one has
``https://{region}.newvoicemedia.com`` for tokens and
``https://{region}.api.newvoicemedia.com`` for the APIs. A profile takes
both URLs from one gateway, so a token is always stamped on the API of the
gateway that issued it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from yarl import URL

from .._provider import ClientAuth, Provider
from .._secret import Secret
from ..exceptions import ConfigError
from ._grant import primary_grant


__all__ = [
    "GATEWAYS",
    "REGIONS",
    "Gateway",
    "Region",
    "api_base_for",
    "provider",
    "token_url_for",
]

Region = Literal["nam", "emea", "apac"]
"""The VCC account regions (North America, Europe/Middle East/Africa, Asia-Pacific)."""

REGIONS: tuple[Region, ...] = ("nam", "emea", "apac")
"""Every documented region."""

Gateway = Literal["cc", "legacy"]
"""VCC's API gateways: the current ``cc.vonage.com`` one, or the legacy ``newvoicemedia.com``."""

GATEWAYS: tuple[Gateway, ...] = ("cc", "legacy")
"""Every gateway; the first is the default."""


def token_url_for(region: Region, gateway: Gateway = "cc") -> str:
    """The region's token endpoint on *gateway*.

    ``https://{region}.cc.vonage.com/Auth/connect/token`` (current), or
    ``https://{region}.newvoicemedia.com/auth/connect/token`` (legacy).
    """
    if _gateway(gateway) == "cc":
        return f"https://{_region(region)}.cc.vonage.com/Auth/connect/token"
    return f"https://{_region(region)}.newvoicemedia.com/auth/connect/token"


def api_base_for(region: Region, gateway: Gateway = "cc") -> str:
    """The region's API origin on *gateway*.

    ``https://{region}.cc.vonage.com`` (current), or
    ``https://{region}.api.newvoicemedia.com`` (legacy).
    """
    if _gateway(gateway) == "cc":
        return f"https://{_region(region)}.cc.vonage.com"
    return f"https://{_region(region)}.api.newvoicemedia.com"


def _region(region: str) -> str:
    if region not in REGIONS:
        msg = f"VCC region must be one of {REGIONS}, not {region!r}"
        raise ConfigError(msg, provider="vonage")
    return region


def _gateway(gateway: str) -> str:
    if gateway not in GATEWAYS:
        msg = f"VCC gateway must be one of {GATEWAYS}, not {gateway!r}"
        raise ConfigError(msg, provider="vonage")
    return gateway


def _origin(url: str | URL) -> URL | None:
    # Only an absolute URL has an origin; Provider reports the others.
    parsed = URL(str(url))
    return parsed.origin() if parsed.is_absolute() and parsed.host else None


def _check_overrides(
    name: str,
    gateway: str,
    token_url: str | URL | None,
    api: list[str | URL] | None,
    defaults: tuple[str, str],
) -> None:
    """Refuse one URL moved to another host while the other stays on the gateway.

    The token would come from one host and be stamped only on another's
    API: every API call would go out without it and get a 401.
    """
    default_token, default_api = defaults
    if token_url is not None and api is None:
        _same_origin(name, gateway, ("token_url", [token_url], default_token), ("api", default_api))
    elif api is not None and token_url is None:
        _same_origin(name, gateway, ("api", api, default_api), ("token_url", default_token))


def _same_origin(
    name: str,
    gateway: str,
    moved: tuple[str, Iterable[str | URL], str],
    kept: tuple[str, str],
) -> None:
    what, urls, default = moved
    for url in urls:
        origin = _origin(url)
        if origin is not None and origin != _origin(default):
            msg = (
                f"provider {name!r}: {what} is overridden to {origin} but {kept[0]} stays "
                f"on the {gateway} gateway's {_origin(kept[1])}: pass both token_url= and "
                "api=, or choose gateway="
            )
            raise ConfigError(msg, provider=name)


def provider(
    *,
    region: Region,
    client_id: str,
    client_secret: str | Secret,
    gateway: Gateway = "cc",
    scope: str = "globalpci",
    client_auth: ClientAuth = "body",
    username: str | None = None,
    password: str | Secret | None = None,
    refresh_token: str | Secret | None = None,
    name: str | None = None,
    token_url: str | URL | None = None,
    api: str | URL | Iterable[str | URL] | None = None,
) -> Provider:
    """A Vonage Contact Center profile.

    Args:
        region: The account's region: ``"nam"``, ``"emea"`` or ``"apac"``.
        client_id: The client id Vonage provided.
        client_secret: The client secret Vonage provided.
        gateway: ``"cc"`` (the current ``https://{region}.cc.vonage.com``,
            for tokens and APIs) or ``"legacy"`` (``newvoicemedia.com``).
            Sets the token URL and the API base together.
        scope: ``globalpci`` for the Payment API; other VCC APIs take
            other scopes (``users:read`` …).
        client_auth: ``"body"`` or ``"basic"``; VCC accepts both.
        username: For the password grant (with *password*).
        password: For the password grant.
        refresh_token: A refresh token obtained elsewhere (for example
            through an authorization-code flow), used first.
        name: Label for logs and statistics; ``vonage-{region}`` by default.
        token_url: Override the token endpoint. Moving it to another host
            needs *api* too.
        api: Override the API base(s) the token may be sent to. Moving it
            to another host needs *token_url* too.

    Returns:
        The profile.

    Raises:
        ConfigError: Unknown region or gateway, or only one of *token_url*
            and *api* moved to a host that is not the gateway's.
    """
    # Checked also when every URL and the name are overridden.
    defaults = (token_url_for(region, gateway), api_base_for(region, gateway))
    label = name or f"vonage-{region}"
    apis = None if api is None else [api] if isinstance(api, str | URL) else list(api)
    _check_overrides(label, gateway, token_url, apis, defaults)
    return Provider(
        name=label,
        token_url=defaults[0] if token_url is None else token_url,
        api=defaults[1] if apis is None else apis,
        client_id=client_id,
        client_secret=client_secret,
        grant_type=primary_grant(username, password),
        username=username,
        password=password,
        refresh_token=refresh_token,
        scope=scope,
        client_auth=client_auth,
        encoding="form",
    )
