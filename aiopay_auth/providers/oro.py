"""OroCommerce, OroCRM and OroPlatform.

Client credentials, or the password grant, in a JSON body to the
application's ``/oauth2-token``. Storefront integrations use a customer
user OAuth application with either grant; the password grant takes the
customer user's login and returns a refresh token, which later refreshes
use. Back-office and storefront tokens are not interchangeable: add one
provider for each, and each is stamped only on its own API's paths
(``/admin/api`` for the back office by default, ``/api`` for the
storefront). Oro API requests should also send
``Accept: application/vnd.api+json`` (:data:`API_ACCEPT`).
"""

from __future__ import annotations

from typing import Literal

from yarl import URL

from .._provider import Provider
from .._secret import Secret
from ..exceptions import ConfigError
from ._grant import primary_grant


__all__ = ["API_ACCEPT", "Application", "provider"]

Application = Literal["backoffice", "storefront"]
"""Which Oro API a token is for."""

API_ACCEPT = "application/vnd.api+json"
"""The media type Oro's ``JSON:API`` expects in ``Accept``."""


def provider(
    *,
    app_url: str | URL,
    client_id: str,
    client_secret: str | Secret,
    application: Application = "backoffice",
    username: str | None = None,
    password: str | Secret | None = None,
    backoffice_path: str = "/admin/api",
    storefront_path: str = "/api",
    name: str | None = None,
) -> Provider:
    """An Oro profile for the back-office or the storefront API.

    Args:
        app_url: The application's URL, e.g. ``https://shop.example.com``.
        client_id: The OAuth application's client id.
        client_secret: Its client secret.
        application: ``"backoffice"`` or ``"storefront"``.
        username: For an OAuth application with the password grant (a
            storefront customer user's, or a back-office user's): the login.
        password: Its password. Give both or neither: with them the
            password grant is used, without them client credentials.
        backoffice_path: Path of the back-office API (follows the
            back-office URL prefix, ``/admin`` by default).
        storefront_path: Path of the storefront API.
        name: Label for logs and statistics; ``oro-{application}`` by default.

    Returns:
        The profile.

    Raises:
        ConfigError: Unknown application, only one of *username* and
            *password*, or a bad URL.
    """
    if application not in ("backoffice", "storefront"):
        msg = f"Oro application must be 'backoffice' or 'storefront', not {application!r}"
        raise ConfigError(msg, provider="oro")
    base = URL(str(app_url).rstrip("/"))
    path = backoffice_path if application == "backoffice" else storefront_path
    return Provider(
        name=name or f"oro-{application}",
        token_url=f"{base}/oauth2-token",
        api=f"{base}/{path.strip('/')}",
        client_id=client_id,
        client_secret=client_secret,
        grant_type=primary_grant(username, password),
        username=username,
        password=password,
        client_auth="body",
        encoding="json",
    )
