"""A fake's two unprotected helper routes: a redirect and a header echo.

``GET /redirect?to=<url>[&status=<3xx>]`` checks that a bearer token never follows a redirect
to another origin; ``/echo-headers`` answers with the request's headers as JSON. Neither
touches the server's state.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web


__all__ = ["echo_headers", "redirect"]

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


async def redirect(request: web.Request) -> web.StreamResponse:
    """Redirect to the ``to`` query parameter with the ``status`` one (302 by default)."""
    target = request.query.get("to")
    if not target:
        raise web.HTTPBadRequest(text="missing 'to' query parameter")
    try:
        status = int(request.query.get("status", "302"))
    except ValueError:
        status = 0
    if status not in _REDIRECT_STATUSES:
        raise web.HTTPBadRequest(text="'status' must be one of 301, 302, 303, 307, 308")
    return web.Response(status=status, headers={hdrs.LOCATION: target})


async def echo_headers(request: web.Request) -> web.StreamResponse:
    """The request's headers as JSON, by lower-case name (repeated ones joined by ``, ``)."""
    echoed: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        echoed[key] = f"{echoed[key]}, {value}" if key in echoed else value
    return web.json_response(echoed)
