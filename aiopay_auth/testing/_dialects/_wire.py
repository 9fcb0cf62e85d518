"""What every fake dialect reads and answers the same way: bodies, headers, refusals."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import hdrs, web
from multidict import CIMultiDict


__all__ = [
    "FORM",
    "JSON",
    "Rejection",
    "accepts_json",
    "forbid_authorization_header",
    "json_fields",
    "json_response",
    "parse_basic",
    "read_body",
    "read_form",
    "read_json",
    "require",
    "same",
]

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"

_NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Rejection(Exception):
    """A token request the provider refuses; turned into the dialect's error response."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        headers: Mapping[str, str] | None = None,
        oauth: bool = False,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers: Mapping[str, str] = headers or {}
        # Pay-me answers with its envelope unless this is set (spent/unknown refresh token).
        self.oauth = oauth


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON token answer, never to be cached."""
    response_headers = CIMultiDict(_NO_STORE)
    if headers:
        response_headers.update(headers)
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type=JSON,
        headers=response_headers,
    )


def same(given: str, expected: str) -> bool:
    """Compare a credential in constant time."""
    return secrets.compare_digest(given.encode(), expected.encode())


def accepts_json(accept: str) -> bool:
    """Whether an ``Accept`` header value admits ``application/json`` with ``q > 0``."""
    for item in accept.split(","):
        media, *params = item.split(";")
        if media.strip().lower() not in ("application/json", "application/*", "*/*"):
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def parse_basic(value: str) -> tuple[str, str]:
    """Decode an RFC 6749 §2.3.1 ``Basic`` credential (form-encoded id and secret).

    Raises:
        Rejection: 401 ``invalid_client`` if the header is not a well-formed Basic credential.
    """
    scheme, _, param = value.strip().partition(" ")
    challenge = {"WWW-Authenticate": 'Basic realm="token"'}
    if scheme.lower() != "basic":
        raise Rejection(
            401,
            "invalid_client",
            "unsupported Authorization scheme on the token endpoint",
            headers=challenge,
        )
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
        client_id, sep, client_secret = decoded.partition(":")
        if not sep or not client_id:
            raise ValueError("no colon")
        return (
            unquote_plus(client_id, errors="strict"),
            unquote_plus(client_secret, errors="strict"),
        )
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise Rejection(
            401, "invalid_client", "malformed Basic credentials", headers=challenge
        ) from None


async def read_body(request: web.Request, content_type: str) -> str:
    """The body as text, if it comes as *content_type* in UTF-8."""
    if request.content_type != content_type:
        raise Rejection(
            415,
            "invalid_request",
            f"Content-Type must be {content_type}, got {request.content_type}",
        )
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(400, "invalid_request", "body is not valid UTF-8") from None


async def read_form(request: web.Request) -> dict[str, str]:
    """A form-encoded body's parameters, each at most once; empty ones dropped."""
    text = await read_body(request, FORM)
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
    except ValueError:
        raise Rejection(400, "invalid_request", "malformed form-encoded body") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise Rejection(400, "invalid_request", f"parameter {name} repeated")
        params[name] = value
    # RFC 6749 §3.1: parameters sent without a value are treated as omitted.
    return {name: value for name, value in params.items() if value}


async def read_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body."""
    text = await read_body(request, JSON)
    try:
        data = json.loads(text)
    except ValueError:
        raise Rejection(400, "invalid_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Rejection(400, "invalid_request", "JSON body must be an object")
    return data


def json_fields(data: Mapping[str, Any], status: int, *names: str) -> dict[str, str]:
    """Pick the named string fields of a JSON body; empty strings count as absent."""
    fields: dict[str, str] = {}
    for name in names:
        value = data.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise Rejection(status, "invalid_request", f"{name} must be a string")
        fields[name] = value
    return fields


def forbid_authorization_header(request: web.Request, status: int = 400) -> None:
    """Refuse client credentials in a header, for a provider that takes them in the body."""
    if hdrs.AUTHORIZATION in request.headers:
        raise Rejection(
            status,
            "invalid_request",
            "this provider takes client credentials only in the request body, "
            "not in an Authorization header",
        )


def require(params: Mapping[str, str], status: int, *names: str) -> None:
    """Refuse a request that lacks one of the named parameters."""
    for name in names:
        if name not in params:
            raise Rejection(status, "invalid_request", f"missing {name}")
