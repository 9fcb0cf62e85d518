"""A FIFO admission gate in front of aiohttp's connection pool.

aiohttp runs client middlewares *before* a request waits for a pooled
connection, and its connector is not fair: a request that arrives while a
connection is being freed takes it ahead of those already queued. Under
saturation that starves some requests for as long as the load lasts, and a
token stamped before the wait can expire while the request queues.

:class:`FairPool` closes both. It admits at most as many requests as the
pool has connections (and, with a per-host limit, at most that many per
host), strictly first come first served, and holds each admission until
the response's connection goes back to the pool. A request
that has passed the gate finds a free connection at once, so a bearer token
stamped after the gate is sent within moments of being read.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from ._check import count, instance_of
from ._gate import FairGate
from ._middleware import (
    AUTHORIZATION,
    BearerAuth,
    forget_in_error,
    forget_sent,
    mark_redirect,
    next_token,
)


__all__ = ["FairGate", "FairPool", "PoolGates", "gates_for"]


class PoolGates:
    """The admission gates of one connector's pool, mirroring its two limits.

    A request takes a place at its host's gate (``limit_per_host``, per
    :attr:`aiohttp.ClientRequest.connection_key`, the key aiohttp's own
    per-host accounting uses), then at the pool's gate (``limit``). Every
    request takes them in that one order, so no two requests can wait on
    each other. A host's gate is dropped once nobody holds or awaits it.

    Args:
        limit: The pool's size; ``0`` for no overall limit.
        limit_per_host: The per-host size; ``0`` for no per-host limit.
    """

    __slots__ = ("_dropped", "_hosts", "_timed", "limit_per_host", "pool")

    def __init__(self, limit: int, limit_per_host: int) -> None:
        limit = count("limit", limit, minimum=0)
        self.pool = FairGate(limit) if limit else None
        self.limit_per_host = count("limit_per_host", limit_per_host, minimum=0)
        self._hosts: dict[Hashable, FairGate] = {}
        self._dropped = (0, 0.0)  # queued, queue_time of the hosts' gates dropped
        self._timed = False

    def host(self, key: Hashable) -> FairGate | None:
        """The gate of *key*'s host, made on first use; ``None`` with no per-host limit."""
        if not self.limit_per_host:
            return None
        gate = self._hosts.get(key)
        if gate is None:
            gate = self._hosts[key] = FairGate(self.limit_per_host)
            gate.timed = self._timed
        return gate

    def time_queues(self) -> None:
        """Count, from now on, who queues at these gates and for how long (for metrics)."""
        self._timed = True
        for gate in self._gates():
            gate.timed = True

    def drop_idle(self, key: Hashable, gate: FairGate) -> None:
        """Forget *key*'s gate if nobody holds or awaits a place in it."""
        if not gate.inside and not gate.waiting and self._hosts.get(key) is gate:
            del self._hosts[key]
            if gate.queued:
                queued, seconds = self._dropped
                self._dropped = (queued + gate.queued, seconds + gate.queue_time)

    @property
    def waiting(self) -> int:
        """How many requests are queued, at the pool's gate and at the hosts' gates."""
        queued = sum(gate.waiting for gate in self._hosts.values())
        return queued + (self.pool.waiting if self.pool is not None else 0)

    def _gates(self) -> list[FairGate]:
        gates = list(self._hosts.values())
        return gates if self.pool is None else [*gates, self.pool]

    @property
    def queued(self) -> int:
        """How many requests have had to queue, at the pool's gate or at a host's."""
        return self._dropped[0] + sum(gate.queued for gate in self._gates())

    @property
    def queue_time(self) -> float:
        """Seconds requests have spent queued at the gates, in total."""
        return self._dropped[1] + sum(gate.queue_time for gate in self._gates())

    @property
    def hosts(self) -> int:
        """How many hosts have a gate in use."""
        return len(self._hosts)


_GATES: weakref.WeakKeyDictionary[aiohttp.BaseConnector, PoolGates | None] = (
    weakref.WeakKeyDictionary()
)


def gates_for(connector: aiohttp.BaseConnector) -> PoolGates | None:
    """The shared gates of a connector's pool, sized to its limits.

    ``None`` when the pool is unbounded (``limit=0`` and
    ``limit_per_host=0``), where there is no queue to be fair about.
    """
    try:
        return _GATES[connector]
    except KeyError:
        limit, per_host = connector.limit, connector.limit_per_host
        gates = _GATES[connector] = PoolGates(limit, per_host) if limit or per_host else None
        return gates


class FairPool:
    """aiohttp client middleware: first-come, first-served admission to the pool.

    Put it *first* in a session's middlewares, before any
    :class:`~aiopay_auth.BearerAuth`, so that tokens are stamped after the
    wait::

        session = aiohttp.ClientSession(
            middlewares=[FairPool(), tokens.middleware(provider)],
        )

    The gates mirror the session's connector: one for the whole pool
    (``limit``) and, when ``limit_per_host`` is set, one per host, so a
    busy host never holds back requests to the others. They are shared by
    every ``FairPool`` on the same connector. :meth:`TokenManager.session
    <aiopay_auth.TokenManager.session>` installs one for you.

    Each admission lasts until the response's connection is released
    (body read, ``release()``, or the ``async with`` block left), just as
    aiohttp's own pool slot does.

    Args:
        auth: A :class:`~aiopay_auth.BearerAuth` to run inside the
            admission, in this same middleware: one middleware layer per
            request instead of two. ``TokenManager.session`` does this.
    """

    __slots__ = ("_auth", "_gates", "_pool", "_release", "_session")

    def __init__(self, auth: BearerAuth | None = None) -> None:
        self._auth = instance_of("FairPool auth", auth, (BearerAuth, type(None)))
        self._session: aiohttp.ClientSession | None = None
        self._gates: PoolGates | None = None
        self._pool: FairGate | None = None
        self._release: Callable[[], None] = _nothing

    def _bind(self, session: aiohttp.ClientSession) -> None:
        """Look up the gates of *session*'s connector once, not on every request."""
        connector = session.connector
        gates = gates_for(connector) if connector is not None else None
        self._gates = gates
        self._pool = pool = gates.pool if gates is not None else None
        # Without per-host gates an admission is given back by the pool
        # gate's own bound method: nothing made per request.
        self._release = pool.release if pool is not None else _nothing
        self._session = session

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Admit *request* in arrival order, then pass it on (and hold its place)."""
        session = request.session  # a session's connector is fixed when it is made
        if session is not self._session:
            self._bind(session)
        # Read before any await: another session's request may rebind while this waits.
        gates, pool, release, auth = self._gates, self._pool, self._release, self._auth
        if gates is None:
            return await (_sent(request, handler) if auth is None else auth(request, handler))
        key: Hashable = None
        host: FairGate | None = None
        if gates.limit_per_host:
            key, host, release = await _enter_host(request, gates, pool)
        if pool is not None and not pool.try_acquire():
            fut = pool.join()
            try:
                await fut
            except BaseException:
                pool.leave(fut)
                _release(gates, key, host, None)
                raise
        try:
            if auth is None:
                response = await _sent(request, handler)
            else:
                # BearerAuth.__call__ inline, inside the admission: one
                # coroutine per request instead of two.
                holder = auth._hop(request)
                if holder is None:
                    response = await _sent(request, handler)
                else:
                    token = holder.current
                    if token is None or token.expires_at <= holder.clock():
                        token = await next_token(holder)
                    request.headers[AUTHORIZATION] = token.header
                    try:
                        response = await handler(request)
                        if response.status == 401:
                            response = await auth._recover(
                                request, handler, holder, token, response
                            )
                    except aiohttp.ClientResponseError as error:
                        forget_in_error(error)
                        raise
                    finally:
                        forget_sent(request, stamped=True)
                if 300 <= response.status < 400:
                    mark_redirect(request, holder)
        except BaseException:
            release()
            raise
        connection = response.connection
        if connection is None:
            release()
        else:
            connection.add_callback(release)
        return response


async def _sent(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """*handler*'s answer to an unstamped *request*; the proxy's credentials forgotten."""
    try:
        return await handler(request)
    except aiohttp.ClientResponseError as error:
        forget_in_error(error)
        raise
    finally:
        forget_sent(request, stamped=False)


async def _enter_host(
    request: ClientRequest, gates: PoolGates, pool: FairGate | None
) -> tuple[Hashable, FairGate, Callable[[], None]]:
    """Take a place at the request's host gate, in line; return its key, gate and release."""
    key = request.connection_key
    host = gates.host(key)
    assert host is not None  # noqa: S101 (a per-host limit makes gates)
    if not host.try_acquire():
        try:
            await host.acquire()
        except BaseException:
            gates.drop_idle(key, host)
            raise
    return key, host, functools.partial(_release, gates, key, host, pool)


def _nothing() -> None:
    """No admission to give back."""


def _release(gates: PoolGates, key: Hashable, host: FairGate | None, pool: FairGate | None) -> None:
    if pool is not None:
        pool.release()
    if host is not None:
        host.release()
        gates.drop_idle(key, host)
