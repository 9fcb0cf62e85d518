"""A FIFO admission gate in front of aiohttp's connection pool.

aiohttp runs client middlewares *before* a request waits for a pooled
connection, and its connector is not fair: a request that arrives while a
connection is being freed takes it ahead of those already queued. Under
saturation that starves some requests for as long as the load lasts, and a
token stamped before the wait can expire while the request queues.

:class:`FairPool` closes both. It admits at most as many requests as the
pool has connections, strictly first come first served, and holds each
admission until the response's connection goes back to the pool. A request
that has passed the gate finds a free connection at once, so a bearer token
stamped after the gate is sent within moments of being read.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from .exceptions import ConfigError


if TYPE_CHECKING:
    from ._middleware import BearerAuth


__all__ = ["FairGate", "FairPool"]


class FairGate:
    """A first-in, first-out counting gate.

    Unlike :class:`asyncio.Semaphore`, a released place is handed straight to
    the longest waiter, so nobody can overtake a queued request.

    Args:
        size: How many holders may be inside at once.
    """

    __slots__ = ("_free", "_waiters", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"FairGate size must be at least 1, not {size}"
            raise ConfigError(msg)
        self.size = size
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """How many callers are queued."""
        return len(self._waiters)

    @property
    def inside(self) -> int:
        """How many places are taken."""
        return self.size - self._free

    def try_acquire(self) -> bool:
        """Take a place if one is free and nobody is queued; never waits."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a place, waiting in line if none is free."""
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The place was handed to us just as we were cancelled.
                self.release()
            elif fut in self._waiters:
                # Still queued (a release may already have dropped it).
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a place back; the longest waiter gets it."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


_GATES: weakref.WeakKeyDictionary[aiohttp.BaseConnector, FairGate] = weakref.WeakKeyDictionary()


def gate_for(connector: aiohttp.BaseConnector) -> FairGate | None:
    """The shared gate of a connector's pool, sized to its limits.

    ``None`` when the pool is unbounded (``limit=0`` and
    ``limit_per_host=0``), where there is no queue to be fair about.
    """
    gate = _GATES.get(connector)
    if gate is None:
        limits = [n for n in (connector.limit, connector.limit_per_host) if n]
        if not limits:
            return None
        gate = _GATES[connector] = FairGate(min(limits))
    return gate


class FairPool:
    """aiohttp client middleware: first-come, first-served admission to the pool.

    Put it *first* in a session's middlewares, before any
    :class:`~aiopay_auth.BearerAuth`, so that tokens are stamped after the
    wait::

        session = aiohttp.ClientSession(
            middlewares=[FairPool(), tokens.middleware(provider)],
        )

    The gate is sized from the session's connector (``limit``, or
    ``limit_per_host`` when that is smaller) and shared by every
    ``FairPool`` on the same connector. :meth:`TokenManager.session
    <aiopay_auth.TokenManager.session>` installs one for you.

    Each admission lasts until the response's connection is released
    (body read, ``release()``, or the ``async with`` block left), just as
    aiohttp's own pool slot does.

    Args:
        auth: A :class:`~aiopay_auth.BearerAuth` to run inside the
            admission, in this same middleware: one middleware layer per
            request instead of two. ``TokenManager.session`` does this.
    """

    __slots__ = ("_auth", "_connector", "_gate")

    def __init__(self, auth: BearerAuth | None = None) -> None:
        self._auth = auth
        self._connector: aiohttp.BaseConnector | None = None
        self._gate: FairGate | None = None

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Admit *request* in arrival order, then pass it on."""
        connector = request.session.connector
        if connector is not self._connector:
            self._gate = gate_for(connector) if connector is not None else None
            self._connector = connector
        gate, auth = self._gate, self._auth
        if gate is None:
            return await (handler(request) if auth is None else auth(request, handler))
        if not gate.try_acquire():
            await gate.acquire()
        try:
            response = await (handler(request) if auth is None else auth(request, handler))
        except BaseException:
            gate.release()
            raise
        connection = response.connection
        if connection is None:
            gate.release()
        else:
            connection.add_callback(gate.release)
        return response
