"""A provider's bound on token requests: how many at once, how many per second."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ._check import count, number
from ._gate import FairGate
from ._policy import RefreshPolicy


__all__ = ["FetchLimit"]


class FetchLimit:
    """At most *concurrent* token requests in flight, started at most *per_second* a second.

    Shared by every credential of one provider API (see
    :class:`~aiopay_auth.Tenants`), so a cold start of thousands of
    tenants reaches the token endpoint as a steady trickle, never as a
    burst. Requests take their turn first come, first served (a
    :class:`~aiopay_auth.FairGate`), then start no sooner than
    ``1 / per_second`` seconds after the previous one started, on the
    event loop's clock. When the provider answers 429, no request of the
    set starts until the pause :meth:`throttled` sets has passed: all
    tenants back off together.

    Args:
        concurrent: The most token requests in flight at once.
        per_second: The most token requests started in any second (their
            starts are spaced ``1 / per_second`` apart).

    Raises:
        ConfigError: *concurrent* is not an int of at least 1, or
            *per_second* not a positive number.
    """

    __slots__ = (
        "_gate",
        "_interval",
        "_next",
        "_paused_until",
        "_rng",
        "_throttles",
        "concurrent",
        "per_second",
    )

    def __init__(self, concurrent: int, per_second: float) -> None:
        self.concurrent = count("max_concurrent_fetches", concurrent, minimum=1)
        self.per_second = number("fetches_per_second", per_second)
        self._gate = FairGate(concurrent)
        self._interval = 1.0 / self.per_second
        self._next = -math.inf  # when the next request may start
        self._paused_until = -math.inf
        self._throttles = 0  # 429 answers in a row
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography

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
            # Sleep until the set may start a request, then book the start.
            # Nothing is booked while asleep, so a request cancelled there
            # (its tenant removed) holds no one else back. Looked at again
            # on each wake: another request may have started meanwhile, or
            # a 429 paused the set (then starts are spaced after the pause
            # like every other: no burst). A loop, not one sleep: a timer
            # may also fire a hair early.
            while (  # noqa: ASYNC110
                wait := max(self._next, self._paused_until) - anyio.current_time()
            ) > 0:
                await anyio.sleep(wait)
            self._next = anyio.current_time() + self._interval
            yield
        finally:
            gate.release()

    def throttled(self, policy: RefreshPolicy, retry_after: float | None) -> float:
        """The provider answered 429: pause every request of the set; return the pause.

        The pause is *policy*'s backoff for the 429s in a row (0.5 s doubling
        to 30 s by default, jittered), and never shorter than the provider's
        ``Retry-After`` (up to ``retry_after_max``).
        """
        self._throttles += 1
        pause = policy.backoff(self._throttles, rng=self._rng, retry_after=retry_after)
        self._paused_until = max(self._paused_until, anyio.current_time() + pause)
        return pause

    @property
    def throttles(self) -> int:
        """429 answers in a row (0: not throttled)."""
        return self._throttles

    def answered(self) -> None:
        """A request was answered, not throttled: the 429 streak ends."""
        self._throttles = 0
