"""A provider's bound on token requests: how many at once, how many per second."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ._check import count, number
from ._pool import FairGate


__all__ = ["FetchLimit"]


class FetchLimit:
    """At most *concurrent* token requests in flight, started at most *per_second* a second.

    Shared by every credential of one provider API (see
    :class:`~aiopay_auth.Tenants`), so a cold start of thousands of
    tenants reaches the token endpoint as a steady trickle, never as a
    burst. Requests take their turn first come, first served (a
    :class:`~aiopay_auth.FairGate`), then start no sooner than
    ``1 / per_second`` seconds after the previous one started, on the
    event loop's clock.

    Args:
        concurrent: The most token requests in flight at once.
        per_second: The most token requests started in any second (their
            starts are spaced ``1 / per_second`` apart).

    Raises:
        ConfigError: *concurrent* is not an int of at least 1, or
            *per_second* not a positive number.
    """

    __slots__ = ("_gate", "_interval", "_next", "concurrent", "per_second")

    def __init__(self, concurrent: int, per_second: float) -> None:
        self.concurrent = count("max_concurrent_fetches", concurrent, minimum=1)
        self.per_second = number("fetches_per_second", per_second)
        self._gate = FairGate(concurrent)
        self._interval = 1.0 / self.per_second
        self._next = -math.inf  # when the next request may start

    @property
    def in_flight(self) -> int:
        """Token requests started and not yet answered."""
        return self._gate.inside

    @property
    def waiting(self) -> int:
        """Token requests queued for their turn."""
        return self._gate.waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a place and a start time; hold the place for the block."""
        gate = self._gate
        if not gate.try_acquire():
            await gate.acquire()
        try:
            start = max(anyio.current_time(), self._next)
            self._next = start + self._interval
            # A loop, not one sleep: a timer may fire a hair early.
            while (wait := start - anyio.current_time()) > 0:  # noqa: ASYNC110
                await anyio.sleep(wait)
            yield
        finally:
            gate.release()
