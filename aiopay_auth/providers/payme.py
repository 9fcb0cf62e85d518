"""Pay-me / Alignet.

A JSON body with ``action: "authorize"``, the ``ALG-API-VERSION`` header,
an ``audience``, and the password grant (or client credentials). With the
``offline_access`` scope the response carries a refresh token, which the
SDK uses for later refreshes, falling back to the primary grant when the
refresh is refused. Responses come in an envelope: ``success: false`` or
status code ``01`` is a failure even with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from yarl import URL

from .._provider import Provider
from .._secret import Secret
from ..exceptions import ConfigError


__all__ = [
    "API_VERSION",
    "DEFAULT_SCOPE",
    "ENVIRONMENTS",
    "Environment",
    "envelope_failure",
    "provider",
]

Environment = Literal["development", "pre-production", "production"]
"""Pay-me's environments."""

ENVIRONMENTS: Mapping[str, tuple[str, str | None]] = {
    "development": ("https://auth.wip.alignet.io/token", "https://api.dev.alignet.io"),
    "pre-production": ("https://auth.pp.alignet.io/token", None),
    "production": ("https://auth.alignet.io/token", "https://api.alignet.io"),
}
"""Each environment's token URL and API audience (``None`` when not published; pass your own)."""

API_VERSION = "1618440906"
"""The ``ALG-API-VERSION`` header value Pay-me requires."""

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
            ``delete:charges``, ``offline_access``.
        audience: The API audience; defaults to the environment's. Pay-me
            does not publish the pre-production audience, so it must be
            given there.
        name: Label for logs and statistics; ``payme-{environment}`` by default.
        token_url: Override the token endpoint.
        api: Override the API base(s) the token may be sent to; defaults
            to the audience.

    Returns:
        The profile.

    Raises:
        ConfigError: Unknown environment, or no audience for pre-production.
    """
    if environment not in ENVIRONMENTS:
        msg = f"Pay-me environment must be one of {tuple(ENVIRONMENTS)}, not {environment!r}"
        raise ConfigError(msg, provider="payme")
    default_url, default_audience = ENVIRONMENTS[environment]
    audience = audience or default_audience
    if audience is None:
        msg = f"Pay-me {environment}: pass audience= (and api= if it differs)"
        raise ConfigError(msg, provider="payme")
    return Provider(
        name=name or f"payme-{environment}",
        token_url=token_url or default_url,
        api=api or audience,
        client_id=client_id,
        client_secret=client_secret,
        grant_type="password" if username or password else "client_credentials",
        username=username,
        password=password,
        scope=scope,
        client_auth="body",
        encoding="json",
        extra_fields={"action": "authorize", "audience": audience},
        extra_headers={"ALG-API-VERSION": API_VERSION},
        envelope=envelope_failure,
    )
