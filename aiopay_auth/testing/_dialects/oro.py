"""OroCommerce: JSON client credentials; a back-office and a storefront client and API."""

from __future__ import annotations

from aiohttp import web

from ._base import DialectRules, TokenDesk
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
