"""The RFC 6749 form-encoded token request that CM.com, Vonage and plain RFC 6749 share."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import hdrs, web

from ._base import DialectRules, TokenDesk
from ._wire import Rejection, json_response, parse_basic, read_form, require


__all__ = ["FormRules"]


class FormRules(DialectRules):
    """A form-encoded token request, client credentials in the body or as HTTP Basic.

    Attributes:
        grants: The grant types the provider accepts.
    """

    grants: ClassVar[frozenset[str]] = frozenset(
        {"client_credentials", "password", "refresh_token"}
    )

    def check_headers(self, request: web.Request) -> None:
        """Refuse headers the provider refuses, before the client is authenticated.

        Raises:
            Rejection: Never here; a provider with header rules overrides this.
        """

    def check_scope(self, scope: frozenset[str]) -> None:
        """Refuse a scope the provider refuses, once the grant type is known to be accepted.

        Raises:
            Rejection: Never here; a provider with scope rules overrides this.
        """

    def refresh_by_default(self, grant_type: str) -> bool:
        """Whether a grant of *grant_type* comes with a refresh token; never here."""
        return False

    async def answer(self, request: web.Request, desk: TokenDesk) -> web.Response:
        """Answer a form-encoded RFC 6749 token request."""
        params = await read_form(request)
        self.check_headers(request)

        authorization = request.headers.getall(hdrs.AUTHORIZATION, ())
        if len(authorization) > 1:
            raise Rejection(400, "invalid_request", "repeated Authorization header")
        if authorization:
            client_id, client_secret = parse_basic(authorization[0])
            if "client_secret" in params:
                raise Rejection(
                    400,
                    "invalid_request",
                    "client credentials sent both in the body and as HTTP Basic",
                )
            if "client_id" in params and params["client_id"] != client_id:
                raise Rejection(
                    400, "invalid_request", "client_id in the body differs from HTTP Basic"
                )
        else:
            require(params, 400, "grant_type", "client_id", "client_secret")
            client_id, client_secret = params["client_id"], params["client_secret"]
        require(params, 400, "grant_type")
        kind = desk.check_client(client_id, client_secret, basic=bool(authorization))

        grant_type = params["grant_type"]
        if grant_type not in self.grants:
            raise Rejection(400, "unsupported_grant_type", f"grant_type {grant_type} unsupported")
        scope = frozenset(params.get("scope", "").split())
        self.check_scope(scope)

        if grant_type == "refresh_token":
            require(params, 400, "refresh_token")
            kind, with_refresh = desk.spend_refresh(params["refresh_token"], client_id)
        else:
            if grant_type == "password":
                require(params, 400, "username", "password")
                desk.check_user(params["username"], params["password"])
            with_refresh = desk.wants_refresh(self.refresh_by_default(grant_type))
        return json_response(desk.issue(kind, client_id, with_refresh=with_refresh))
