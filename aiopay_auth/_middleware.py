"""The aiohttp client middleware that stamps bearer tokens."""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs

from ._holder import TokenHolder
from ._provider import path_under


__all__ = ["BearerAuth"]

_AUTHORIZATION = hdrs.AUTHORIZATION


class BearerAuth:
    """aiohttp client middleware: ``Authorization: Bearer …`` for one provider's API.

    On every request (aiohttp calls middlewares once per redirect hop) it
    checks the URL against the provider's API scopes. In scope, it stamps
    the current token, read from the holder without a lock or an await;
    only when no usable token exists does it wait for the refresher's fetch.
    Out of scope, it sends nothing and strips this provider's token if an
    earlier hop carried it.

    A 401 from the API invalidates the token it was sent with (only the
    first 401 per token wakes the refresher), waits for the next token and
    resends the request once. A second 401 is returned to the caller.

    Get one from :meth:`TokenManager.middleware
    <aiopay_auth.TokenManager.middleware>`.

    Args:
        holder: The provider's token holder.
    """

    __slots__ = ("_holder", "_scopes")

    def __init__(self, holder: TokenHolder) -> None:
        self._holder = holder
        scopes: dict[tuple[str, str | None, int | None], list[str]] = {}
        for url in holder.provider.api:
            scopes.setdefault((url.scheme, url.host, url.port), []).append(url.raw_path)
        # An origin whose prefixes include the root matches every path.
        self._scopes: dict[tuple[str, str | None, int | None], tuple[str, ...] | None] = {
            origin: None if any(not p.strip("/") for p in paths) else tuple(paths)
            for origin, paths in scopes.items()
        }

    @property
    def holder(self) -> TokenHolder:
        """The holder whose tokens this middleware stamps."""
        return self._holder

    def _in_scope(self, request: ClientRequest) -> bool:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        if origin not in self._scopes:
            return False
        prefixes = self._scopes[origin]
        if prefixes is None:
            return True
        path = url.raw_path
        return any(path_under(path, prefix) for prefix in prefixes)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Stamp *request* if it is in scope, send it, and recover from one 401."""
        holder = self._holder
        if not self._in_scope(request):
            latest = holder.latest
            if latest is not None and request.headers.get(_AUTHORIZATION) == latest.header:
                del request.headers[_AUTHORIZATION]
            return await handler(request)
        token = holder.current
        if token is None or token.expires_at <= holder.clock():
            token = await holder.get()
        request.headers[_AUTHORIZATION] = token.header
        response = await handler(request)
        if response.status != 401:
            return response
        response.release()
        holder.invalidate(token)
        token = await holder.get()
        request.headers[_AUTHORIZATION] = token.header
        holder.stats.recoveries += 1
        return await handler(request)
