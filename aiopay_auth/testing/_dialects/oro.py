"""OroCommerce: JSON client credentials; a back-office and a storefront client and API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..._provider import Provider
from ...providers import oro
from ._base import DialectRules, Endpoint, TokenDesk
from ._wire import (
    Rejection,
    forbid_authorization_header,
    json_fields,
    json_response,
    read_json,
    require,
)


__all__ = ["OroRules"]


class OroRules(DialectRules):
    """Oro: the storefront client's tokens are good only for the storefront API, and back."""

    token_path = "/oauth2-token"
    api_path = "/admin/api"
    storefront_path = "/api"

    async def answer(self, request: web.Request, desk: TokenDesk) -> web.Response:
        """Answer a JSON ``client_credentials`` request, credentials in the body."""
        data = await read_json(request)
        forbid_authorization_header(request)
        params = json_fields(data, 400, "grant_type", "client_id", "client_secret")
        require(params, 400, "grant_type", "client_id", "client_secret")
        kind = desk.check_client(params["client_id"], params["client_secret"], basic=False)
        if params["grant_type"] != "client_credentials":
            raise Rejection(
                400, "unsupported_grant_type", f"grant_type {params['grant_type']} unsupported"
            )
        return json_response(desk.issue(kind, params["client_id"], with_refresh=False))

    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """An :func:`~aiopay_auth.providers.oro.provider` aimed at *fake*.

        ``application="storefront"`` in *options* takes the storefront client's id.
        """
        storefront = options.get("application") == "storefront"
        kwargs = {
            "app_url": fake.base_url,
            "client_id": fake.storefront_client_id if storefront else fake.client_id,
            "client_secret": fake.client_secret,
        }
        return oro.provider(**{**kwargs, **options})
