"""The aiohttp client middleware that stamps bearer tokens."""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from yarl import URL

from ._holder import TokenHolder
from .exceptions import ConfigError


__all__ = ["BearerAuth"]

_AUTHORIZATION = hdrs.AUTHORIZATION

_Origin = tuple[str, str | None, int | None]


class BearerAuth:
    """aiohttp client middleware: ``Authorization: Bearer …`` for providers' APIs.

    On every request (aiohttp calls middlewares once per redirect hop) it
    finds the provider whose API the URL belongs to: same origin, and a
    path under that API's prefix (the longest prefix wins). It stamps that
    provider's current token, read from its holder without a lock or an
    await; only when no usable token exists does it wait for the
    refresher's fetch. A URL outside every API gets no token, and a token
    of ours that an earlier hop carried is stripped.

    A 401 from an API invalidates the token it was sent with (only the
    first 401 per token wakes the refresher), waits for the next token and
    resends the request once. A second 401 is returned to the caller.

    One middleware serves any number of providers, so a session that talks
    to several APIs pays for one scope lookup per request. Get one from
    :meth:`TokenManager.middleware <aiopay_auth.TokenManager.middleware>`.

    Args:
        holders: The providers' token holders.

    Raises:
        ConfigError: No holder, or two providers claim the same API URL.
    """

    __slots__ = ("_holders", "_routes")

    def __init__(self, *holders: TokenHolder) -> None:
        if not holders:
            msg = "BearerAuth needs at least one token holder"
            raise ConfigError(msg)
        self._holders = holders
        routes: dict[_Origin, list[tuple[str, str, TokenHolder]]] = {}
        for holder in holders:
            for url in holder.provider.api:
                entries = routes.setdefault((url.scheme, url.host, url.port), [])
                prefix = url.raw_path.rstrip("/")
                for other_prefix, _, other in entries:
                    if other_prefix == prefix:
                        msg = (
                            f"providers {other.name!r} and {holder.name!r} both claim {url}; "
                            "a URL can carry only one provider's token"
                        )
                        raise ConfigError(msg, provider=holder.name)
                # The prefix itself, and what lies below it at a segment boundary.
                entries.append((prefix, prefix + "/", holder))
        # Most specific prefix first.
        self._routes = {
            origin: tuple(sorted(entries, key=lambda e: len(e[0]), reverse=True))
            for origin, entries in routes.items()
        }

    @property
    def holders(self) -> tuple[TokenHolder, ...]:
        """The holders whose tokens this middleware stamps."""
        return self._holders

    def holder_for(self, url: URL) -> TokenHolder | None:
        """The holder whose token a request to *url* carries, if any."""
        entries = self._routes.get((url.scheme, url.host, url.port))
        if entries is None:
            return None
        path = url.raw_path
        for prefix, below, holder in entries:
            if not prefix or path == prefix or path.startswith(below):
                return holder
        return None

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Stamp *request* if it is in scope, send it, and recover from one 401."""
        holder = self.holder_for(request.url)
        if holder is None:
            self._strip(request)
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

    def _strip(self, request: ClientRequest) -> None:
        sent = request.headers.get(_AUTHORIZATION)
        if sent is None:
            return
        for holder in self._holders:
            latest = holder.latest
            if latest is not None and sent == latest.header:
                del request.headers[_AUTHORIZATION]
                return
