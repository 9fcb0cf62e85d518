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
    try:
        parsed = URL(str(url))
    except ValueError:
        return None
    return parsed.origin() if parsed.is_absolute() and parsed.host else None


def _site(origin: URL) -> tuple[str, str, int | None]:
    # Scheme, host (a fully qualified name's trailing dot dropped) and port.
    return (origin.scheme, (origin.host or "").rstrip("."), origin.port)


# Every host of every gateway: (scheme, host, port) -> (region, gateway).
_GATEWAY_SITES: dict[tuple[str, str, int | None], tuple[str, str]] = {
    _site(URL(url).origin()): (region, gateway)
    for region in REGIONS
    for gateway in GATEWAYS
    for url in (token_url_for(region, gateway), api_base_for(region, gateway))
}


def _gateway_of(origin: URL) -> tuple[str, str] | None:
    """The (region, gateway) whose host *origin* is, or ``None`` for any other host."""
    return _GATEWAY_SITES.get(_site(origin))


def _shown(gateway: tuple[str, str] | None) -> str:
    return "not a VCC gateway" if gateway is None else f"the {gateway[0]} {gateway[1]} gateway"


def _check_gateways(name: str, token_url: str | URL, api: Iterable[str | URL]) -> None:
    """Refuse a token URL and an API on different gateways, however they were given.

    The one rule, on the hosts themselves: a token is valid only on the
    gateway that issued it, so every API host must belong to the token
    host's gateway (region and gateway: ``emea`` ``cc`` is not ``nam``
    ``cc``, nor ``emea`` ``legacy``). Two hosts that are not VCC's (a
    sandbox) cannot be told apart and pass; a VCC gateway paired with any
    other host does not. Before, only a URL moved alone was checked: both
    given on different gateways, each token went out to an API that
    refuses it, and every call got a 401.
    """
    token_origin = _origin(token_url)
    if token_origin is None:
        return
    token_gateway = _gateway_of(token_origin)
    for url in api:
        api_origin = _origin(url)
        if api_origin is None:
            continue
        api_gateway = _gateway_of(api_origin)
        if api_gateway != token_gateway:
            msg = (
                f"provider {name!r}: token_url {token_origin} ({_shown(token_gateway)}) and "
                f"api {api_origin} ({_shown(api_gateway)}) are on different gateways: a "
                "token works only on the gateway that issued it; put token_url= and api= "
                "on one gateway, or choose region= and gateway="
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
        token_url: Override the token endpoint. It must be on the same
            gateway as every *api* base, given or not.
        api: Override the API base(s) the token may be sent to. Each must
            be on the same gateway as *token_url*, given or not.

    Returns:
        The profile.

    Raises:
        ConfigError: Unknown region or gateway, or the token URL and an
            API base on different gateways (a VCC gateway's host with
            another region's, the other gateway's, or a host that is not
            VCC's), whichever of them were passed.
    """
    # Checked also when every URL and the name are overridden.
    defaults = (token_url_for(region, gateway), api_base_for(region, gateway))
    label = name or f"vonage-{region}"
    url = defaults[0] if token_url is None else token_url
    apis = [defaults[1]] if api is None else [api] if isinstance(api, str | URL) else list(api)
    _check_gateways(label, url, apis)
    return Provider(
        name=label,
        token_url=url,
        api=apis,
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
