"""Pay-me / Alignet: JSON body, version header, answers and failures in an envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from ..._provider import Provider
from ...providers import payme
from ._base import DialectRules, Endpoint, TokenDesk, aimed_at
from ._wire import (
    JSON,
    Rejection,
    forbid_authorization_header,
    json_fields,
    json_response,
    read_body,
    read_json,
    require,
    same,
)


__all__ = ["PaymeRules"]

_API_VERSION: Final = "1618440906"
_SCOPES: Final = frozenset({"create:token", "post:charges", "delete:charges", "offline_access"})


def _envelope_failure(reason: str) -> dict[str, object]:
    return {
        "action": "authorize",
        "success": False,
        "authorization": {
            "meta": {
                "status": {"code": "01", "message_ilgn": [{"locale": "es_PE", "value": reason}]}
            }
        },
    }


class PaymeRules(DialectRules):
    """Pay-me: failures are HTTP 200 envelopes, except a bad refresh token's OAuth error.

    ``offline_access`` in scope brings a refresh token.
    """

    token_path = "/token"
    api_path = "/v1"

    async def answer(self, request: web.Request, desk: TokenDesk) -> web.Response:
        """Answer an ``action: authorize`` JSON request with the success envelope."""
        data = await _read_json(request)
        forbid_authorization_header(request, status=200)
        params = json_fields(
            data,
            200,
            "action",
            "grant_type",
            "client_id",
            "client_secret",
            "audience",
            "scope",
            "username",
            "password",
            "refresh_token",
        )
        require(params, 200, "action", "grant_type", "client_id", "client_secret")
        if params["action"] != "authorize":
            raise Rejection(200, "invalid_request", "action must be authorize")
        kind = _check_client(desk, params["client_id"], params["client_secret"])
        require(params, 200, "audience", "scope")
        if params["audience"] != desk.audience:
            raise Rejection(200, "invalid_request", "unknown audience")
        scope = frozenset(params["scope"].split())
        unknown = sorted(scope - _SCOPES)
        if unknown:
            raise Rejection(200, "invalid_scope", f"unknown scope {' '.join(unknown)}")

        grant_type = params["grant_type"]
        if grant_type == "refresh_token":
            require(params, 200, "refresh_token")
            if "username" in params and not same(params["username"], desk.username):
                raise Rejection(200, "invalid_grant", "wrong username")
            kind, with_refresh = desk.spend_refresh(params["refresh_token"], params["client_id"])
        elif grant_type in ("password", "client_credentials"):
            if grant_type == "password":
                require(params, 200, "username", "password")
                desk.check_user(params["username"], params["password"], status=200)
            with_refresh = desk.wants_refresh("offline_access" in scope)
        else:
            raise Rejection(200, "unsupported_grant_type", f"grant_type {grant_type} unsupported")

        issued = desk.issue(kind, params["client_id"], with_refresh=with_refresh)
        payload: dict[str, Any] = {
            "action": "authorize",
            "success": True,
            "access_token": issued["access_token"],
            "scope": params["scope"],
            "expires_in": issued["expires_in"],
            "token_type": issued["token_type"],
            "authorization": {
                "meta": {
                    "status": {
                        "code": "00",
                        "message_ilgn": [{"locale": "es_PE", "value": "Access Token creado"}],
                    }
                }
            },
        }
        if "refresh_token" in issued:
            payload["refresh_token"] = issued["refresh_token"]
        return json_response(payload)

    def error_body(self, rejection: Rejection) -> object:
        """The failure envelope, or the OAuth error for a spent or unknown refresh token."""
        if rejection.oauth:
            return super().error_body(rejection)
        return _envelope_failure(rejection.description)

    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """A :func:`~aiopay_auth.providers.payme.provider` (development) aimed at *fake*."""
        kwargs = {
            "environment": "development",
            **aimed_at(fake),
            "audience": fake.audience,
            "username": fake.username,
            "password": fake.password,
        }
        return payme.provider(**{**kwargs, **options})


async def _read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != JSON:
        # Checked before the version header so a wrong content type is always a 415.
        await read_body(request, JSON)
    if request.headers.get("ALG-API-VERSION") != _API_VERSION:
        raise Rejection(400, "invalid_request", f"header ALG-API-VERSION must be {_API_VERSION}")
    return await read_json(request)


def _check_client(desk: TokenDesk, client_id: str, client_secret: str) -> str:
    # A wrong credential is an envelope too: HTTP 200, no Basic challenge.
    try:
        return desk.check_client(client_id, client_secret, basic=False)
    except Rejection as rejection:
        raise Rejection(200, rejection.error, rejection.description) from None
