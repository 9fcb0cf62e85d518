"""Pay-me / Alignet.

A JSON body with ``action: "authorize"``, the ``ALG-API-VERSION`` header,
an ``audience``, and client credentials (the flow Pay-me's current
authentication page describes) or the password grant. With the
``offline_access`` scope the response carries a refresh token, which the
SDK uses for later refreshes, falling back to the primary grant when the
refresh is refused. Responses come in an envelope: ``success: false`` or
status code ``01`` is a failure even with HTTP 200.

The token is sent to the environment's API (its audience) and to its
Nonce API on the auth host, which Pay-me Flex needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from yarl import URL

from .._provider import Provider
from .._secret import Secret
from ..exceptions import ConfigError
from ._grant import primary_grant


__all__ = [
    "API_VERSION",
    "API_VERSION_V1",
    "DEFAULT_SCOPE",
    "ENVIRONMENTS",
    "Environment",
    "EnvironmentInfo",
    "envelope_failure",
    "provider",
]

Environment = Literal["development", "pre-production", "production"]
"""Pay-me's environments."""

API_VERSION = "1709847567"
"""The current ``ALG-API-VERSION`` (pre-production and production)."""

API_VERSION_V1 = "1618440906"
"""The version on Pay-me's older v1 pages, the only ones that list development."""


class EnvironmentInfo(NamedTuple):
    """What Pay-me's pages publish for one environment."""

    token_url: str
    """The token endpoint."""
    audience: str
    """The ``audience`` to ask for, byte for byte (the trailing slash matters)."""
    api_version: str
    """The ``ALG-API-VERSION`` header value the environment's page documents."""
    nonce_url: str
    """The Nonce API (Pay-me Flex), which takes the bearer token too."""


ENVIRONMENTS: Mapping[str, EnvironmentInfo] = {
    # Only the v1 pages list development, with their own version and audience.
    "development": EnvironmentInfo(
        "https://auth.wip.alignet.io/token",
        "https://api.dev.alignet.io",
        API_VERSION_V1,
        "https://auth.wip.alignet.io/nonce",
    ),
    "pre-production": EnvironmentInfo(
        "https://auth.preprod.alignet.io/token",
        "https://api.preprod.alignet.io/",
        API_VERSION,
        "https://auth.preprod.alignet.io/nonce",
    ),
    "production": EnvironmentInfo(
        "https://auth.alignet.io/token",
        "https://api.alignet.io/",
        API_VERSION,
        "https://auth.alignet.io/nonce",
    ),
}
"""Each environment's token URL, audience, API version and Nonce API."""

DEFAULT_SCOPE = "create:token post:charges offline_access"
"""Scope asked for by default; ``offline_access`` makes Pay-me issue a refresh token."""


def envelope_failure(data: Mapping[str, object]) -> tuple[str, str] | None:
    """Read Pay-me's success envelope.

    Returns:
        ``None`` for success; ``(code, message)`` when ``success`` is false
        or ``authorization.meta.status.code`` is not ``"00"``. Both are the
        provider's text as it came: the parser redacts, then scrubs them.
    """
    status = _dig(data, "authorization", "meta", "status")
    code = status.get("code") if isinstance(status, Mapping) else None
    success = data.get("success")
    if success is not False and code in (None, "00"):
        return None
    messages = status.get("message_ilgn") if isinstance(status, Mapping) else None
    texts = (
        [m["value"] for m in messages if isinstance(m, Mapping) and isinstance(m.get("value"), str)]
        if isinstance(messages, list)
        else []
    )
    message = "; ".join(texts) if texts else "success is false"
    return (str(code) if code is not None else "success=false", message)


def _dig(data: Mapping[str, object], *keys: str) -> object:
    node: object = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def provider(
    *,
    environment: Environment,
    client_id: str,
    client_secret: str | Secret,
    username: str | None = None,
    password: str | Secret | None = None,
    scope: str = DEFAULT_SCOPE,
    audience: str | None = None,
    api_version: str | None = None,
    name: str | None = None,
    token_url: str | URL | None = None,
    api: str | URL | Iterable[str | URL] | None = None,
) -> Provider:
    """A Pay-me / Alignet profile.

    Args:
        environment: ``"development"``, ``"pre-production"`` or ``"production"``.
        client_id: The merchant's client id.
        client_secret: The merchant's client secret.
        username: The merchant user, for the password grant.
        password: Its password; with *username* the password grant is used,
            without both, client credentials.
        scope: Space-separated from ``create:token``, ``post:charges``,
            ``get:charges``, ``delete:charges``, ``offline_access``.
        audience: The API audience; defaults to the environment's.
        api_version: The ``ALG-API-VERSION`` header; defaults to the
            environment's (:data:`API_VERSION` for pre-production and
            production, :data:`API_VERSION_V1` for development).
        name: Label for logs and statistics; ``payme-{environment}`` by default.
        token_url: Override the token endpoint.
        api: Override the API base(s) the token may be sent to; defaults
            to the audience and the environment's Nonce API.

    Returns:
        The profile.

    Raises:
        ConfigError: Unknown environment, or an empty ``api_version``.
    """
    if environment not in ENVIRONMENTS:
        msg = f"Pay-me environment must be one of {tuple(ENVIRONMENTS)}, not {environment!r}"
        raise ConfigError(msg, provider="payme")
    facts = ENVIRONMENTS[environment]
    version = facts.api_version if api_version is None else api_version
    if not version:
        msg = f"Pay-me {environment}: api_version must not be empty"
        raise ConfigError(msg, provider="payme")
    audience = audience or facts.audience
    return Provider(
        name=name or f"payme-{environment}",
        token_url=token_url or facts.token_url,
        api=api or (audience, facts.nonce_url),
        client_id=client_id,
        client_secret=client_secret,
        grant_type=primary_grant(username, password),
        username=username,
        password=password,
        scope=scope,
        client_auth="body",
        encoding="json",
        extra_fields={"action": "authorize", "audience": audience},
        extra_headers={"ALG-API-VERSION": version},
        envelope=envelope_failure,
    )
