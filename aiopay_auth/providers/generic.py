"""Any RFC 6749 token endpoint: client credentials, password, refresh tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from yarl import URL

from .._provider import ClientAuth, Encoding, Provider
from .._secret import Secret
from ._grant import primary_grant


__all__ = ["provider"]


def provider(
    *,
    name: str,
    token_url: str | URL,
    api: str | URL | Iterable[str | URL],
    client_id: str,
    client_secret: str | Secret,
    scope: str | None = None,
    username: str | None = None,
    password: str | Secret | None = None,
    refresh_token: str | Secret | None = None,
    client_auth: ClientAuth = "basic",
    encoding: Encoding = "form",
    extra_fields: Mapping[str, str | Secret] | None = None,
    extra_headers: Mapping[str, str | Secret] | None = None,
    default_lifetime: float = 300.0,
    allow_insecure_http: bool = False,
) -> Provider:
    """A profile for a standard OAuth 2.0 server.

    Uses the password grant when *username* and *password* are given,
    client credentials otherwise, and a refresh token when one is held.
    Client authentication defaults to HTTP Basic, which RFC 6749 §2.3.1
    requires servers to support.

    Args:
        name: Label for logs and statistics.
        token_url: The token endpoint.
        api: The API base URL(s) the token may be sent to.
        client_id: The client id.
        client_secret: The client secret.
        scope: Space-separated scope, if any.
        username: Resource owner, for the password grant.
        password: Its password.
        refresh_token: A refresh token obtained elsewhere, used first.
        client_auth: ``"basic"`` or ``"body"``.
        encoding: ``"form"`` (the RFC's) or ``"json"``.
        extra_fields: More body fields for every request; pass a
            :class:`~aiopay_auth.Secret` for a credential (API key, assertion).
        extra_headers: More headers for every token request; a value may
            be a :class:`~aiopay_auth.Secret` too.
        default_lifetime: Assumed lifetime when ``expires_in`` is absent.
        allow_insecure_http: Allow plain HTTP to non-loopback hosts.

    Returns:
        The profile.
    """
    return Provider(
        name=name,
        token_url=token_url,
        api=api,
        client_id=client_id,
        client_secret=client_secret,
        grant_type=primary_grant(username, password),
        username=username,
        password=password,
        refresh_token=refresh_token,
        scope=scope,
        client_auth=client_auth,
        encoding=encoding,
        extra_fields=extra_fields or {},
        extra_headers=extra_headers or {},
        default_lifetime=default_lifetime,
        allow_insecure_http=allow_insecure_http,
    )
