"""Vonage Contact Center (VCC) Payment API.

Client credentials (or the password grant) against the account region's
identity server, form-encoded, with scope ``globalpci`` for the Payment API.
Client credentials go in the body or as HTTP Basic. VCC's token type is
sometimes ``bearer`` in lower case and its lifetime varies between
documents (3600 s, 7200 s): the SDK trusts ``expires_in``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from yarl import URL

from .._provider import ClientAuth, Provider
from .._secret import Secret
from ..exceptions import ConfigError


__all__ = ["REGIONS", "Region", "api_base_for", "provider", "token_url_for"]

Region = Literal["nam", "emea", "apac"]
"""The VCC account regions (North America, Europe/Middle East/Africa, Asia-Pacific)."""

REGIONS: tuple[Region, ...] = ("nam", "emea", "apac")
"""Every documented region."""


def token_url_for(region: Region) -> str:
    """The region's token endpoint, ``https://{region}.newvoicemedia.com/auth/connect/token``."""
    return f"https://{_region(region)}.newvoicemedia.com/auth/connect/token"


def api_base_for(region: Region) -> str:
    """The region's API origin, ``https://{region}.api.newvoicemedia.com``."""
    return f"https://{_region(region)}.api.newvoicemedia.com"


def _region(region: str) -> str:
    if region not in REGIONS:
        msg = f"VCC region must be one of {REGIONS}, not {region!r}"
        raise ConfigError(msg, provider="vonage")
    return region


def provider(
    *,
    region: Region,
    client_id: str,
    client_secret: str | Secret,
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
        scope: ``globalpci`` for the Payment API; other VCC APIs take
            other scopes (``users:read`` …).
        client_auth: ``"body"`` or ``"basic"``; VCC accepts both.
        username: For the password grant (with *password*).
        password: For the password grant.
        refresh_token: A refresh token obtained elsewhere (for example
            through an authorization-code flow), used first.
        name: Label for logs and statistics; ``vonage-{region}`` by default.
        token_url: Override the token endpoint (for example the newer
            ``https://{region}.cc.vonage.com/Auth/connect/token``).
        api: Override the API base(s) the token may be sent to.

    Returns:
        The profile.
    """
    _region(region)  # also when every URL and the name are overridden
    return Provider(
        name=name or f"vonage-{region}",
        token_url=token_url or token_url_for(region),
        api=api or api_base_for(region),
        client_id=client_id,
        client_secret=client_secret,
        grant_type="password" if username or password else "client_credentials",
        username=username,
        password=password,
        refresh_token=refresh_token,
        scope=scope,
        client_auth=client_auth,
        encoding="form",
    )
