"""Bearer tokens on :class:`httpx.AsyncClient` requests (``pip install 'aiopay-auth[httpx]'``).

The same holders, scope rule and 401 rule as the aiohttp middleware, for a
second client::

    from aiopay_auth.httpx import BearerAuth

    auth = BearerAuth(pay)  # holders from tokens.add()
    async with auth.client(timeout=10) as http:
        resp = await http.post(f"{cm.API_BASE}/...", json=order)

httpx runs an :class:`httpx.Auth` flow once per call, and follows redirects
inside that call without running the flow again: each hop's request is a
copy of the one before, ``Authorization`` included whenever the origin is
the same (also outside the API's path prefix, also on another provider's
API) and on an http-to-https upgrade. Only the client's ``request`` event
hooks run before every hop is sent. So :class:`BearerAuth` has two parts:
its flow marks the call and answers a 401, and its request hook
(:meth:`BearerAuth.hook`) decides on every hop, just before it is sent,
whether it carries the token. The flow refuses to work without the hook:
a call whose hops the hook never saw goes out with no token and then
raises :class:`~aiopay_auth.exceptions.ConfigError`. :meth:`BearerAuth.client`
builds a client with both.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import attrs
import httpx
from yarl import URL

from ._check import instance_of
from ._holder import TokenHolder
from ._recovery import resend_after_401
from ._routes import Routes
from ._token import Token
from .exceptions import ConfigError


__all__ = ["BearerAuth", "replayable"]

_AUTHORIZATION = "Authorization"
# The request extension that ties every hop of a call to the flow that marked it.
_CALL = "aiopay_auth.call"
_SYNC_ONLY = (
    "aiopay_auth.httpx.BearerAuth is async only: use it with httpx.AsyncClient "
    "(its tokens come from asyncio refreshers)"
)


def replayable(request: httpx.Request) -> bool:
    """Whether *request*'s body is known to be sendable again, identical, after a 401.

    An allow-list: an :class:`httpx.ByteStream` body, which is what httpx
    makes of no body, ``content=`` bytes or str, ``json=`` and ``data=``
    form fields, and what ``await request.aread()`` leaves behind. Anything
    else (an async generator or iterator, a file, multipart, a custom
    stream) is not: read such a request first (``await request.aread()``)
    for it to be resent.
    """
    return isinstance(request.stream, httpx.ByteStream)


@attrs.define(eq=False)
class _Call:
    """One call through a :class:`BearerAuth` flow, seen again on each of its hops."""

    auth: BearerAuth
    holder: TokenHolder | None  # the provider the call is stamped for (None: not stamped)
    own: bool = False  # the caller set Authorization on the first hop: sent untouched
    hops: int = 0  # hops the hook saw
    sent: Token | None = None  # the token the latest hop carried
    stamped: set[str] = attrs.Factory(set)  # every header value stamped on the call's hops
    requests: list[httpx.Request] = attrs.Factory(list)  # every hop the hook saw


class BearerAuth(httpx.Auth):
    """:class:`httpx.Auth`: ``Authorization: Bearer …`` for providers' APIs, async only.

    Every hop of a call (httpx follows redirects within one call) is stamped
    only when its URL is in the API of the provider the call's first request
    was for: same origin, and a path under that API's prefix (the longest
    prefix wins), the same rule as :class:`aiopay_auth.BearerAuth`. The token
    is the holder's current one, read without a lock or an await; only when
    no usable token exists does the hop wait for the refresher's fetch, up
    to the manager's ``wait_timeout``
    (:class:`~aiopay_auth.exceptions.TokenUnavailableError` after that).
    Any other hop, a redirect off the API or onto another provider's API
    included, carries none of our tokens: httpx's copy is stripped.

    An ``Authorization`` header the caller set on an in-scope request is
    sent untouched, with no 401 recovery; one of our own recent tokens set
    by hand where it does not belong is stripped.

    A 401 to a hop that carried our token invalidates that token and, when
    the body is :func:`replayable`, resends the call once with the next
    token; otherwise (or while the holder backs off from an API that refuses
    fresh tokens too) the caller gets the 401, and the token is still
    invalidated. A second 401 is returned as it is. The rule is the aiohttp
    middleware's, shared (``stats.recoveries``, ``stats.unreplayable``).

    Once the answer is in (or the call failed), our tokens are removed from
    every request the response shows (``response.request``, its
    ``history``, ``next_request``) and from every hop the hook saw (the
    ``request`` of an exception raised on a later hop). Not from the
    request of :class:`httpx.TooManyRedirects`, a copy the hook never sees;
    and your own response hooks see each hop's request as it was sent.

    The hook must be the client's last ``request`` hook: a hook after it
    that rewrites the URL would send the stamped token wherever it points.
    :meth:`client` puts it last; keep it last if you add hooks later.

    The flow needs its request hook on the client: use :meth:`client`, or
    pass ``event_hooks={"request": [auth.hook]}`` to your own
    :class:`httpx.AsyncClient`. Without it, a call is sent with no token and
    then raises :class:`~aiopay_auth.exceptions.ConfigError`; never with a
    token httpx might carry on to another URL. One hook serves every
    :class:`BearerAuth` used on the client (a per-request ``auth=``
    included), each call by its own auth's holders.

    Args:
        holders: The providers' token holders (from :meth:`TokenManager.add
            <aiopay_auth.TokenManager.add>`); each token goes only to its
            own provider's API.

    Raises:
        ConfigError: No holder, a holder that is not a
            :class:`~aiopay_auth.TokenHolder`, or two providers claim the
            same API URL.
    """

    def __init__(self, *holders: TokenHolder) -> None:
        for holder in holders:
            # Not a Tenants set: give a tenant's holder per request (auth=) instead.
            instance_of("aiopay_auth.httpx.BearerAuth holders", holder, TokenHolder)
        # The scope rule and its checks: the one the aiohttp middleware uses.
        self._routes = Routes("aiopay_auth.httpx.BearerAuth", *holders)

    @property
    def holders(self) -> tuple[TokenHolder, ...]:
        """The holders whose tokens this auth stamps."""
        return self._routes.holders

    def holder_for(self, url: httpx.URL | str) -> TokenHolder | None:
        """The holder whose token a request to *url* carries, if any."""
        # The one call of the scope rule (origin + longest path prefix) in this module.
        return self._routes.holder_for(URL(str(httpx.URL(url)), encoded=True))

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An :class:`httpx.AsyncClient` with this auth and its request hook.

        Args:
            kwargs: Passed to :class:`httpx.AsyncClient`, except ``auth``;
                the hook is added after any ``event_hooks["request"]`` given.

        Raises:
            ConfigError: ``auth`` was given.
        """
        if "auth" in kwargs:
            msg = "BearerAuth.client() sets auth itself"
            raise ConfigError(msg)
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [*hooks.get("request", ()), self.hook]
        return httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Refuse: tokens are read from asyncio holders; use :class:`httpx.AsyncClient`."""
        raise TypeError(_SYNC_ONLY)
        yield request  # type: ignore[unreachable]  # pragma: no cover - a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Mark the call for the hook, send it, and recover from one 401."""
        holder = self.holder_for(request.url)
        own = False
        if holder is not None and _AUTHORIZATION in request.headers:
            self._strip(request, keep=holder)
            own = _AUTHORIZATION in request.headers
            if own:
                holder = None  # the caller's own header: sent untouched, no 401 recovery
        call = _Call(self, holder, own)
        request.extensions = {**request.extensions, _CALL: call}
        answers: list[httpx.Response] = []
        try:
            response = yield request
            answers.append(response)
            if call.hops == 0:
                msg = (
                    "aiopay_auth.httpx.BearerAuth needs its request hook on the client: "
                    "use auth.client(), or event_hooks={'request': [auth.hook]}; "
                    "the request was sent with no token"
                )
                raise ConfigError(msg)
            token = call.sent
            if (
                holder is not None
                and token is not None
                and response.status_code == 401
                and resend_after_401(holder, token, replayable=replayable(request))
            ):
                holder.stats.recoveries += 1
                # The hook stamps the next token, waiting for it if need be.
                response = yield request
                answers.append(response)
                if response.status_code == 401 and call.sent is not None:
                    holder.invalidate(call.sent)  # a fresh token refused too
        finally:
            self._scrub(call, request, answers)

    async def hook(self, request: httpx.Request) -> None:
        """The client's ``request`` event hook: stamp or strip each hop just before it is sent.

        A hop of a call made through another :class:`BearerAuth` (a
        per-request ``auth=``) is decided by that one's rules; this one's
        tokens are kept off it all the same.
        """
        call = request.extensions.get(_CALL)
        if not isinstance(call, _Call):
            # Not a call of any flow: only our tokens that do not belong here go.
            self._strip(request, keep=self.holder_for(request.url))
            return
        await call.auth._hop(call, request)
        if call.auth is not self:
            self._strip(request, keep=call.holder if call.sent is not None else None)

    async def _hop(self, call: _Call, request: httpx.Request) -> None:
        """Stamp *request*, a hop of *call*, if in scope of the call's provider; else strip."""
        call.hops += 1
        call.requests.append(request)  # scrubbed when the call ends, however it ends
        if call.own and call.hops == 1:
            return  # the caller's own header, on the request they sent
        holder = call.holder
        if holder is None or self.holder_for(request.url) is not holder:
            call.sent = None
            self._strip(request)
            return
        token = holder.current
        if token is None or token.expires_at <= holder.clock():
            token = await holder.get()
        request.headers[_AUTHORIZATION] = token.header
        call.sent = token
        call.stamped.add(token.header)

    def _scrub(self, call: _Call, request: httpx.Request, answers: list[httpx.Response]) -> None:
        """Remove the call's tokens from every request the caller can still see."""
        seen = [request, *call.requests]
        for response in answers:
            seen += [r.request for r in (*response.history, response)]
            if response.next_request is not None:
                seen.append(response.next_request)
        for each in seen:
            _remove(each, lambda value: value in call.stamped or self._ours(value, None))
            each.extensions.pop(_CALL, None)  # a next_request sent later is a call of its own

    def _strip(self, request: httpx.Request, keep: TokenHolder | None = None) -> None:
        """Remove every recent token of ours (other than *keep*'s) from *request*."""
        _remove(request, lambda value: self._ours(value, keep))

    def _ours(self, value: str, keep: TokenHolder | None) -> bool:
        """Whether the header *value* carries a recent token of a holder other than *keep*."""
        return self._routes.ours(value, keep)


def _remove(request: httpx.Request, drop: Callable[[str], bool]) -> None:
    """Remove the ``Authorization`` fields of *request* that *drop* picks; keep the others."""
    sent = request.headers.get_list(_AUTHORIZATION)
    kept = [value for value in sent if not drop(value)]
    if len(kept) == len(sent):
        return
    del request.headers[_AUTHORIZATION]
    if kept:
        items = [*request.headers.multi_items(), *((_AUTHORIZATION, v) for v in kept)]
        request.headers = httpx.Headers(items, encoding=request.headers.encoding)
