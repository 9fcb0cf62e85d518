"""A first-in, first-out counting gate: the admission line of both clients' pools.

Client-agnostic (no HTTP client imported): :class:`~aiopay_auth.FairPool`
(aiohttp), :mod:`aiopay_auth.httpx`'s gated client and the tenants' fetch
limit queue at one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ._check import count


__all__ = ["FairGate"]


class FairGate:
    """A first-in, first-out counting gate.

    Unlike :class:`asyncio.Semaphore`, a released place is handed straight to
    the longest waiter, so nobody can overtake a queued request.

    Once :attr:`timed` is set (``aiopay_auth.otel.instrument`` sets it), it
    also counts the callers that had to queue (:attr:`queued`) and the
    seconds they spent queued (:attr:`queue_time`), for metrics. Both are
    kept only on the waiting path: taking a free place costs nothing more,
    and without :attr:`timed` the waiting path only tests the flag.

    Args:
        size: How many holders may be inside at once.
    """

    __slots__ = ("_changed", "_free", "_queue_time", "_waiters", "queued", "size", "timed")

    def __init__(self, size: int) -> None:
        self.size = size = count("FairGate size", size, minimum=1)
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.timed = False
        self.queued = 0
        self._queue_time = 0.0
        self._changed = 0.0

    def _tally(self) -> None:
        # Before the line's length changes: the seconds spent queued since
        # the last change are its length times the time since then.
        now = time.monotonic()
        self._queue_time += len(self._waiters) * (now - self._changed)
        self._changed = now

    @property
    def queue_time(self) -> float:
        """Seconds callers have spent queued, in total (those still queued included)."""
        return self._queue_time + len(self._waiters) * (time.monotonic() - self._changed)

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
        fut = self.join()
        try:
            await fut
        except BaseException:
            self.leave(fut)
            raise

    def join(self) -> asyncio.Future[None]:
        """Queue for a place: the place is yours once the returned future is done.

        The inline form of :meth:`acquire` (no coroutine of its own) for a
        hot path that has already failed :meth:`try_acquire`. A waiter
        that stops waiting (cancelled) must call :meth:`leave`.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.timed:
            self._tally()
            self.queued += 1
        self._waiters.append(fut)
        return fut

    def leave(self, fut: asyncio.Future[None]) -> None:
        """Give up the place *fut* (from :meth:`join`) waited for, or had just been handed."""
        if fut.done() and not fut.cancelled():
            # The place was handed to us just as we were cancelled.
            self.release()
        elif fut in self._waiters:
            # Still queued (a release may already have dropped it).
            if self.timed:
                self._tally()
            self._waiters.remove(fut)

    def release(self) -> None:
        """Give a place back; the longest waiter gets it."""
        waiters = self._waiters
        while waiters:
            if self.timed:
                self._tally()
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
