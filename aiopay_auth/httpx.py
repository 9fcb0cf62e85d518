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
builds a client with both, and with a fair gate in front of its pool:
httpx runs request hooks before a hop waits for a pooled connection, so
the client's last hook takes the hop's place at the gate first, then
stamps it, and the place is held until the hop's response is closed.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
import httpcore
import httpx
from yarl import URL

from ._check import count, instance_of
from ._gate import FairGate
from ._holder import TokenHolder
from ._provider import plain_http_proxy_problem
from ._routes import Routes
from ._token import Token
from .exceptions import ConfigError


__all__ = ["BearerAuth", "FairGate", "pool_gate", "replayable"]

_AUTHORIZATION = "Authorization"
# The request extension that ties every hop of a call to the flow that marked it.
_CALL = "aiopay_auth.call"
# The request extension that carries a hop's place at its client's gate, hook to transport.
_PLACE = "aiopay_auth.place"
# How many URLs' holders BearerAuth.holder_for keeps before it starts over.
_SCOPES_KEPT = 1024
# httpx's own default pool size (httpx.Limits' max_connections), the gate's default.
_DEFAULT_LIMIT = 100
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
    middleware's, shared (``health().recoveries``, ``health().unreplayable``).

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
        # holder_for's recent answers, by URL: each call asks for its URL twice (flow, hook).
        self._scopes: dict[str, TokenHolder | None] = {}

    @property
    def holders(self) -> tuple[TokenHolder, ...]:
        """The holders whose tokens this auth stamps."""
        return self._routes.holders

    def holder_for(self, url: httpx.URL | str) -> TokenHolder | None:
        """The holder whose token a request to *url* carries, if any."""
        key = str(url)
        scopes = self._scopes
        try:
            return scopes[key]
        except KeyError:
            pass
        # The one call of the scope rule (origin + longest path prefix) in this module.
        holder = self._routes.holder_for(URL(str(httpx.URL(url)), encoded=True))
        if len(scopes) >= _SCOPES_KEPT:
            scopes.clear()
        scopes[key] = holder  # the holders never change: the answer for a URL holds
        return holder

    def client(self, *, limit: int | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An :class:`httpx.AsyncClient` with this auth, its request hook and a fair pool.

        httpx runs request hooks, and so stamps the token, *before* a
        request waits for a pooled connection, and its pool is not fair.
        So the client gets a first-come, first-served gate
        (:class:`~aiopay_auth.httpx.FairGate`) with as many places as its pool
        has connections: each hop takes a place before the token is read,
        and holds it until its response is closed (read, ``aclose()``, the
        ``async with`` block left) or the hop fails. A hop past the gate
        finds a free connection at once, so no stamped request waits in
        httpx's pool, and waiters are served in arrival order. Every
        transport of the client (``proxy=``, ``mounts=``, proxies from the
        environment) is behind the one gate. With the transport httpx builds
        (no ``transport=``, HTTP/1.1, as many connections kept alive as
        open), each place has a pooled connection of its own instead of
        sharing httpx's pool, whose work per request grows with its size.

        Args:
            limit: The pool's connections (``max_connections``, and as
                many kept alive) and the gate's places. Default 100,
                httpx's own default; required with your own ``transport=``
                or ``mounts=``: at most the smallest of their pools.
            kwargs: Passed to :class:`httpx.AsyncClient`, except ``auth``;
                the hook is added after any ``event_hooks["request"]``
                given. ``limits=`` instead of *limit*: the gate takes its
                ``max_connections`` (``None``, an unbounded pool: no gate).

        Raises:
            ConfigError: ``auth`` was given, both *limit* and ``limits``,
                ``transport`` or ``mounts`` without *limit*, or a *limit*
                that is not an int of at least 1; or a provider's plain-HTTP
                API URL would go through a proxy not on loopback
                (``proxy=``, a ``mounts=`` transport built with ``proxy=``,
                or ``HTTP_PROXY``/``ALL_PROXY`` with ``trust_env``, httpx's
                default) and the provider did not set ``allow_insecure_http``.
        """
        if "auth" in kwargs:
            msg = "BearerAuth.client() sets auth itself"
            raise ConfigError(msg)
        size = _pool_size(limit, kwargs)
        gate = None if size is None else FairGate(size)
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        last = self.hook if gate is None else _Admission(self, gate).hook
        hooks["request"] = [*hooks.get("request", ()), last]
        client = httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)
        self._check_proxies(client)
        if gate is not None:
            if "transport" not in kwargs and not kwargs.get("http2", False):
                _give_places_connections(client, gate.size, kwargs["limits"])
            _gate_transports(client, gate)
            _GATES[client] = gate
        return client

    def _check_proxies(self, client: httpx.AsyncClient) -> None:
        """Refuse *client* if a plain-HTTP API of ours would reach a proxy off loopback.

        httpx fixes a client's proxies when it is built (``proxy=``,
        ``mounts=``, or the environment's with ``trust_env``, read once), so
        the check is made here, before any request, for each API URL.
        The proxy is the one httpx itself would use: the transport
        ``client._transport_for_url`` picks (httpx 0.28's own mount
        matching, ``NO_PROXY`` included) rather than a second reading of
        the environment that could disagree with it. A transport that is
        not httpx's (its proxy unknown) is not checked.
        """
        for holder in self.holders:
            provider = holder.provider
            if provider.allow_insecure_http:
                continue
            for url in provider.api:
                if url.scheme != "http":
                    continue
                transport = client._transport_for_url(httpx.URL(str(url)))
                proxy = _proxy_of(transport)
                problem = plain_http_proxy_problem("api", url, proxy, allow_insecure_http=False)
                if problem is not None:
                    raise ConfigError(f"BearerAuth.client(): {problem}", provider=holder.name)

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
                and holder.resend_after_401(token, replayable=replayable(request))
            ):
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
        # The same request is usually seen three times (sent, hop, response's): once is enough.
        for each in {id(each): each for each in seen}.values():
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


def pool_gate(client: httpx.AsyncClient) -> FairGate | None:
    """The admission gate of a client built by :meth:`BearerAuth.client`.

    ``None`` for any other client and for an unbounded pool. Its
    :attr:`~aiopay_auth.httpx.FairGate.inside` and
    :attr:`~aiopay_auth.httpx.FairGate.waiting` are the hops holding a place
    (in flight) and those queued for one.
    """
    return _GATES.get(client)


_GATES: weakref.WeakKeyDictionary[httpx.AsyncClient, FairGate] = weakref.WeakKeyDictionary()


def _proxy_of(transport: httpx.AsyncBaseTransport) -> URL | None:
    """The proxy *transport* sends through, if it is httpx's own and has one.

    httpx 0.28's :class:`httpx.AsyncHTTPTransport` built with a proxy keeps
    an httpcore proxy pool (HTTP or SOCKS) with the proxy's URL; httpx has
    no public way to read it back. Any other transport: ``None`` (unknown).
    """
    pool = getattr(transport, "_pool", None)
    proxy_url = getattr(pool, "_proxy_url", None)
    if not isinstance(proxy_url, httpcore.URL):
        return None
    return URL.build(
        scheme=proxy_url.scheme.decode("ascii"),
        host=proxy_url.host.decode("ascii"),
        port=proxy_url.port,
    )


def _pool_size(limit: int | None, kwargs: dict[str, Any]) -> int | None:
    """The gate's size for :meth:`BearerAuth.client`; sets ``kwargs["limits"]`` from *limit*."""
    own = next((name for name in ("transport", "mounts") if name in kwargs), None)
    if limit is None and own is not None:
        msg = (
            f"BearerAuth.client({own}=...) needs limit=: the most requests in flight, "
            "at most your transports' max_connections"
        )
        raise ConfigError(msg)
    if "limits" in kwargs:
        if limit is not None:
            msg = "BearerAuth.client() takes limit= or limits=, not both"
            raise ConfigError(msg)
        limits = instance_of("BearerAuth.client() limits", kwargs["limits"], httpx.Limits)
        return limits.max_connections
    size = count("BearerAuth.client() limit", _DEFAULT_LIMIT if limit is None else limit, minimum=1)
    # As many kept alive as open: no connection is closed and reopened under load.
    kwargs["limits"] = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    return size


def _gate_transports(client: httpx.AsyncClient, gate: FairGate) -> None:
    """Put every transport *client* may send a hop through behind *gate*.

    httpx picks a hop's transport by its URL: a mount (``proxy=``,
    ``mounts=``, proxies from the environment; ``None`` for the default)
    or the default one. httpx has no public way to wrap them after it built
    them, so its two attributes are replaced; a test with ``proxy=`` and one
    with ``mounts=`` fail if httpx ever moves them.
    """
    client._transport = _GatedTransport(client._transport, gate)
    mounts = client._mounts
    for pattern, transport in mounts.items():
        if transport is not None:
            mounts[pattern] = _GatedTransport(transport, gate)


def _give_places_connections(client: httpx.AsyncClient, size: int, limits: httpx.Limits) -> None:
    """Replace the default transport httpx built for *client* by one connection per place.

    httpx's shared pool (httpcore's) scans every connection it holds each
    time a request arrives or a response is closed, with a readability
    check (system calls) on each idle one, and gives requests arriving
    together the same idle connection, all but one of which then fail on it
    and go round again. Its cost per request grows with the pool. Behind the
    gate, at most *size* hops are in flight, so a pool of *size* pools of
    one connection each (:class:`_OneConnectionEach`) always has one free
    for a hop, found without a scan. Only the transport httpx built itself
    (no ``transport=``, HTTP/1.1, as many kept alive as places; proxies
    and ``mounts=`` keep their pools), whose settings are the client's own,
    read back from it.
    """
    keepalive = limits.max_keepalive_connections
    if keepalive is not None and keepalive < size:
        return  # fewer kept alive than places: the shared pool closes the others
    built = client._transport
    pool = getattr(built, "_pool", None)
    ssl_context = getattr(pool, "_ssl_context", None)
    if (
        type(built) is not httpx.AsyncHTTPTransport
        or type(pool) is not httpcore.AsyncConnectionPool
        or not isinstance(ssl_context, ssl.SSLContext)
    ):
        return  # not the transport httpx 0.28 builds: keep its shared pool
    one = httpx.Limits(
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=limits.keepalive_expiry
    )
    http1 = bool(getattr(pool, "_http1", True))
    client._transport = _OneConnectionEach(
        size,
        lambda: httpx.AsyncHTTPTransport(verify=ssl_context, http1=http1, limits=one),
        keepalive_expiry=limits.keepalive_expiry,
    )


_Origin = tuple[bytes, bytes, int | None]


class _OneConnectionEach(httpx.AsyncBaseTransport):
    """A client's default transport behind its gate: pools of one connection, one per hop.

    A hop takes a free pool whose connection is to its origin if there is
    one (the last used first: its connection is the most likely alive),
    else a pool not used yet, else the idle pool of another origin (whose
    connection is then replaced), and gives it back when its response is
    closed or it failed. At most *size* pools are made: with the gate's
    places, one is always free.

    A pool's connection left idle longer than *keepalive_expiry* is closed
    at the next request, as httpx's own pool does with its idle ones: a
    pool of one connection checks only its own, so the free pools are
    kept in order of release and the expired ones closed from the oldest.
    """

    def __init__(
        self,
        size: int,
        make: Callable[[], httpx.AsyncHTTPTransport],
        *,
        keepalive_expiry: float | None,
    ) -> None:
        self._size = size
        self._make = make
        self._expiry = keepalive_expiry
        self._made: list[httpx.AsyncHTTPTransport] = []
        self._free: dict[_Origin, list[httpx.AsyncHTTPTransport]] = {}
        # Free pools by release, oldest first; an entry is stale once its pool
        # was taken again (its release time in _released is then another).
        self._idle: collections.deque[tuple[float, _Origin, httpx.AsyncHTTPTransport]] = (
            collections.deque()
        )
        self._released: dict[int, float] = {}

    async def _close_expired(self) -> None:
        """Close the pools whose connection has been idle past the keep-alive expiry."""
        if self._expiry is None:
            return
        idle, deadline = self._idle, time.monotonic() - self._expiry
        while idle and idle[0][0] <= deadline:
            released, origin, transport = idle.popleft()
            free = self._free.get(origin, [])
            if self._released.get(id(transport)) != released or transport not in free:
                continue  # taken again since: its later release has its own entry
            free.remove(transport)
            self._made.remove(transport)
            del self._released[id(transport)]
            await transport.aclose()

    def _take(self, origin: _Origin) -> httpx.AsyncHTTPTransport:
        free = self._free.get(origin)
        if free:
            return free.pop()
        if len(self._made) >= self._size:
            for free in self._free.values():
                if free:
                    return free.pop()
        # Not made yet (or, a hop not behind the gate's count: one more).
        made = self._make()
        self._made.append(made)
        return made

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* on a pool of its own; the pool is free again once the response is."""
        await self._close_expired()
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        transport = self._take(origin)

        def give_back() -> None:
            self._free.setdefault(origin, []).append(transport)
            if self._expiry is not None:
                now = time.monotonic()
                self._released[id(transport)] = now
                self._idle.append((now, origin, transport))

        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            give_back()
            raise
        return _released_when_closed(response, give_back)

    async def __aenter__(self) -> Self:
        """Nothing to enter: each pool is made when first needed."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Close every pool made."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pool made."""
        for transport in self._made:
            await transport.aclose()


class _Place:
    """One hop's place at a client's gate.

    Taken by the request hook before the hop is stamped, claimed by the
    transport when the hop is sent, given back when its response is closed
    or the hop fails, once.
    """

    __slots__ = ("_state", "gate")

    def __init__(self, gate: FairGate) -> None:
        self.gate = gate
        self._state = "admitted"

    def claim(self) -> bool:
        """Take over the place for sending; ``False`` if it was not waiting for its hop."""
        if self._state != "admitted":
            return False
        self._state = "sending"
        return True

    def unclaimed(self) -> None:
        """Give the place back if no transport claimed it (the hop went nowhere)."""
        if self._state == "admitted":
            self.release()

    def release(self) -> None:
        """Give the place back to the gate (its longest waiter); later calls do nothing."""
        if self._state != "free":
            self._state = "free"
            self.gate.release()


async def _admitted(gate: FairGate, request: httpx.Request) -> None:
    """Take a place at *gate* for *request*, within its pool timeout as httpx's pool would.

    Raises:
        httpx.PoolTimeout: No place came within the request's ``pool``
            timeout (``None``: no bound).
    """
    if gate.try_acquire():
        return
    timeouts = request.extensions.get("timeout")
    bound = timeouts.get("pool") if isinstance(timeouts, dict) else None
    try:
        with anyio.fail_after(bound):
            await gate.acquire()
    except TimeoutError:
        msg = f"no place at the client's gate within the pool timeout ({bound} s)"
        raise httpx.PoolTimeout(msg, request=request) from None


@attrs.define(eq=False)
class _Admission:
    """A gated client's last request hook: a place at its gate, then the auth's hook."""

    auth: BearerAuth
    gate: FairGate

    async def hook(self, request: httpx.Request) -> None:
        """Wait in line for a place, then stamp or strip *request*; the place goes with it."""
        gate = self.gate
        await _admitted(gate, request)
        place = _Place(gate)
        try:
            await self.auth.hook(request)
        except BaseException:
            place.release()  # no token (TokenUnavailableError), or cancelled while waiting
            raise
        # A fresh dict: httpx copies the extensions of a hop into the next one.
        request.extensions = {**request.extensions, _PLACE: place}
        # httpx sends the hop right after its last request hook, with no await
        # in between: by the loop's next turn the transport has claimed the
        # place. One still unclaimed went nowhere (a later hook raised; httpx
        # refused the request) and is given back.
        asyncio.get_running_loop().call_soon(place.unclaimed)


class _GatedTransport(httpx.AsyncBaseTransport):
    """A transport whose hops each hold a place at the gate until their response is closed."""

    def __init__(self, transport: httpx.AsyncBaseTransport, gate: FairGate) -> None:
        self._transport = transport
        self._gate = gate

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* on the place its hook took (or wait for one here)."""
        place = request.extensions.get(_PLACE)
        if not (isinstance(place, _Place) and place.gate is self._gate and place.claim()):
            # Not admitted by this client's hook (it was replaced, or a hook
            # after it waited): wait in line here, after the stamp.
            await _admitted(self._gate, request)
            place = _Place(self._gate)
            place.claim()
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException:
            place.release()
            raise
        return _released_when_closed(response, place.release)

    async def __aenter__(self) -> Self:
        """Enter the wrapped transport (the client enters each of its transports)."""
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Exit the wrapped transport."""
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()


def _released_when_closed(response: httpx.Response, release: Callable[[], None]) -> httpx.Response:
    """*response*, whose closing calls *release*; at once if there is nothing to close.

    A body read already (an ``httpx.MockTransport``'s: httpx never closes
    it) or not an async body (httpx refuses the response next) is released
    now.
    """
    stream = response.stream
    if response.is_stream_consumed or not isinstance(stream, httpx.AsyncByteStream):
        release()
        return response
    response.stream = _ReleasingStream(stream, release)
    return response


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its hop's place (or pool) back once closed, after the body."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        """Close the body (its connection goes back to the pool), then free the place."""
        try:
            await self._stream.aclose()
        finally:
            self._release()
