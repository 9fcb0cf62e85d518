"""CM.com Online Payments.

OAuth 2.0 client credentials, form-encoded, secret in the body; tokens last
``expires_in`` seconds (3600 in CM's example) and come without a refresh
token, so each refresh asks with the same credentials.
"""

from __future__ import annotations

from collections.abc import Iterable

from yarl import URL

from .._provider import Provider
from .._secret import Secret


__all__ = ["API_BASE", "TOKEN_URL", "provider"]

TOKEN_URL = "https://api.pay.cm.com/api/v1/authorization/oauth2/token"
"""CM.com's token endpoint."""

API_BASE = "https://api.pay.cm.com/api/v1"
"""Base of CM.com's Online Payments API; the token is sent only below it."""


def provider(
    *,
    client_id: str,
    client_secret: str | Secret,
    name: str = "cm",
    token_url: str | URL = TOKEN_URL,
    api: str | URL | Iterable[str | URL] = API_BASE,
) -> Provider:
    """A CM.com Online Payments profile.

    Args:
        client_id: The API client id CM provided.
        client_secret: The API client secret CM provided.
        name: Label for logs and statistics.
        token_url: Override the token endpoint (sandboxes, tests).
        api: Override the API base(s) the token may be sent to.

    Returns:
        The profile.
    """
    return Provider(
        name=name,
        token_url=token_url,
        api=api,
        client_id=client_id,
        client_secret=client_secret,
        grant_type="client_credentials",
        client_auth="body",
        encoding="form",
    )
