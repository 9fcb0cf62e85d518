"""One task per set of tenants: a heap of refresh points, fetches within the set's limit.

Why a heap rather than a task per tenant: a sleeping task costs about
5 KiB of Python objects (task, coroutine frames, cancel scope, events),
and ten thousand of them wake one by one only to queue on the same
:class:`~aiopay_auth.FetchLimit`. One task that knows every tenant's next
refresh point starts fetches only when the limit has room, so it also
chooses *which* tenant goes next: one whose token a request is waiting
for, or whose token a 401 refused, before queued background refreshes.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math

import anyio
from anyio.abc import TaskGroup

from ._limit import FetchLimit
from ._log import log
from ._step import FetchStep
from ._tenant_holder import TenantHolder, TenantWriter


__all__ = ["REFRESH_SPREAD", "Schedule", "Slot"]

REFRESH_SPREAD = 0.5
"""Each tenant's refresh point is drawn uniformly in the last half of its delay.

So tenants started together (a cold start) do not all refresh together
one lifetime later: their refresh points spread over half a refresh
delay *D*, about ``2 / D`` of the set a second (one-hour tokens: 0.06 %),
and are drawn afresh at each refresh. Simulated for 10,000 tenants
started at 1,000 a second with one-hour tokens, the busiest second holds
16 refreshes (0.16 %); with the policy's jitter alone it held 384 (3.8 %).
See ``tests/test_tenants_spread.py``.
"""

# A slot's states.
_TIMER = 0  # waiting in the heap for its due time
_READY = 1  # due, queued for a place under the limit
_FETCHING = 2
_REMOVED = 3
_IDLE = 4  # no request for idle_after: no token, no timer, until the next request


class Slot:
    """One tenant's place in its set's :class:`Schedule`.

    Attributes:
        writer: The writer's half of the tenant's holder.
        step: Its token requests and their rules.
    """

    __slots__ = (
        "_again",
        "_fetch",
        "_last_used",
        "_refresh",
        "_schedule",
        "_state",
        "_ticket",
        "_wanted",
        "step",
        "writer",
    )

    def __init__(self, writer: TenantWriter, step: FetchStep) -> None:
        self.writer = writer
        self.step = step
        self._state = _READY
        self._ticket = -1  # the one queue entry of this slot that counts
        self._refresh = False  # its timer is a refresh point, not a backoff
        self._wanted = False  # a request waits, or a 401 or a rotation asks
        self._again = False  # asked for a new token while fetching (a rotation)
        self._fetch: tuple[anyio.CancelScope, anyio.Event] | None = None
        self._last_used = 0.0  # a refresh point at which it had been used
        self._schedule: Schedule | None = None

    @property
    def holder(self) -> TenantHolder:
        """The tenant's holder."""
        return self.writer.holder

    def urge(self, again: bool) -> None:
        """Tell the schedule a token is wanted now (see :meth:`Schedule.urge`)."""
        if self._schedule is not None:
            self._schedule.urge(self, again=again)


class Schedule:
    """The refresher of a whole set: every tenant's next token request, from one task.

    Each tenant's next token request is an entry in a heap ordered by due
    time (its refresh point, or its retry after a failure). When one falls
    due it joins a queue; :meth:`run` starts the queued requests, at most
    ``limit.concurrent`` at once (each then takes its turn under the
    :class:`~aiopay_auth.FetchLimit`: rate, 429 pause). Tenants a request
    is waiting for, whose token a 401 refused, or that were given new
    credentials, queue ahead of background refreshes and first tokens;
    a tenant in a failure's backoff keeps it (a rotation excepted).
    Each fetch is the tenant's :class:`~aiopay_auth._step.FetchStep`: the
    same rules as a provider's refresher.

    A tenant whose refresh point (or retry) comes with no request for it
    since at least *idle_after* seconds rests: its token is dropped and it is not
    refreshed. Its next request (or ``holder.get()``) queues one fetch,
    ahead of background ones, that all its waiters share; refreshing then
    resumes. Requests are noted as they come (``note_request()``) and read at
    refresh points, so a tenant rests at the first refresh point at least
    *idle_after* after its last request, never sooner.

    Args:
        name: The set's name (task names, logs).
        limit: The set's bound on token requests.
        idle_after: Seconds without a request after which a tenant rests;
            ``None``: never.
    """

    __slots__ = (
        "_heap",
        "_idle_after",
        "_limit",
        "_name",
        "_ready",
        "_running",
        "_tickets",
        "_urgent",
        "_wake",
    )

    def __init__(self, name: str, limit: FetchLimit, *, idle_after: float | None) -> None:
        self._name = name
        self._limit = limit
        self._idle_after = idle_after
        self._heap: list[tuple[float, int, Slot]] = []
        self._urgent: collections.deque[tuple[int, Slot]] = collections.deque()
        self._ready: collections.deque[tuple[int, Slot]] = collections.deque()
        self._tickets = itertools.count()
        self._running = 0
        self._wake = anyio.Event()

    @property
    def running(self) -> int:
        """Token requests of the set started and not yet finished."""
        return self._running

    def add(self, slot: Slot) -> None:
        """Queue *slot*'s first token request (behind the ones already queued)."""
        slot._schedule = self
        slot.writer.urge_with(slot.urge)
        slot._last_used = anyio.current_time()
        slot.writer.take_use()  # idle from now until a request comes
        self._queue(slot, urgent=False)
        self._wake.set()

    def urge(self, slot: Slot, *, again: bool = False) -> None:
        """A token is wanted now for *slot*: queue it ahead of background refreshes.

        A refresh timer is cut short; a failure's backoff stands (the
        retry then goes first), unless *again* (new credentials), which
        also asks for one more request when one is in flight.
        """
        state = slot._state
        if state == _FETCHING:
            slot._again = slot._again or again
            return
        if state == _REMOVED or (state == _READY and slot._wanted and not again):
            return
        slot._wanted = True
        if state == _TIMER and not slot._refresh and not again:
            return  # the backoff stands; the retry is queued first when due
        if state == _IDLE:
            slot.writer.resume()
            log.debug("aiopay_auth.tenant_resumed", provider=self._name, tenant=slot.holder.name)
        self._queue(slot, urgent=True)
        self._wake.set()

    async def remove(self, slot: Slot) -> None:
        """Forget *slot*; return once its request in flight, if any, has stopped."""
        slot._state = _REMOVED
        slot._ticket = -1
        slot._schedule = None
        # Drop its queue entries now: nothing of a removed tenant is kept.
        self._heap = [entry for entry in self._heap if entry[2] is not slot]
        heapq.heapify(self._heap)
        for queue in (self._urgent, self._ready):
            kept = [entry for entry in queue if entry[1] is not slot]
            queue.clear()
            queue.extend(kept)
        fetch = slot._fetch
        if fetch is not None:
            scope, done = fetch
            scope.cancel()
            await done.wait()

    async def run(self) -> None:
        """Start due token requests within the limit; until cancelled."""
        async with anyio.create_task_group() as tg:
            while True:
                now = anyio.current_time()
                self._release(now)
                while self._running < self._limit.concurrent and (slot := self._next()):
                    self._start(tg, slot)
                wait = self._heap[0][0] - now if self._heap else math.inf
                # Woken by a due time, a finished request or an urge; each
                # round starts requests or waits, so it cannot spin.
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def _queue(self, slot: Slot, *, urgent: bool) -> None:
        slot._state = _READY
        slot._ticket = ticket = next(self._tickets)
        (self._urgent if urgent else self._ready).append((ticket, slot))

    def _release(self, now: float) -> None:
        """Queue every slot whose due time has come; drop stale heap entries."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, ticket, slot = heapq.heappop(heap)
            if ticket == slot._ticket and not self._rests(slot, now):
                self._queue(slot, urgent=slot._wanted)

    def _rests(self, slot: Slot, now: float) -> bool:
        """When *slot*'s timer is due: rest it if it had no request for ``idle_after``.

        A refresh point or a retry alike: a tenant nobody uses stops
        asking, also while its token requests fail.
        """
        writer = slot.writer
        if writer.take_use():
            slot._last_used = now
            return False
        idle_after = self._idle_after
        if idle_after is None or now - slot._last_used < idle_after:
            return False
        slot._state = _IDLE
        slot._ticket = -1
        writer.rest()
        log.debug("aiopay_auth.tenant_idle", provider=self._name, tenant=writer.holder.name)
        return True

    def _next(self) -> Slot | None:
        for queue in (self._urgent, self._ready):
            while queue:
                ticket, slot = queue.popleft()
                if ticket == slot._ticket:
                    return slot
        return None

    def _start(self, tg: TaskGroup, slot: Slot) -> None:
        slot._state = _FETCHING
        slot._ticket = -1
        self._running += 1
        tg.start_soon(self._fetch, slot, name=f"aiopay_auth fetch {slot.holder.name}")

    async def _fetch(self, slot: Slot) -> None:
        scope, done = anyio.CancelScope(), anyio.Event()
        slot._fetch = (scope, done)
        outcome = None
        try:
            with scope:
                outcome = await slot.step()
        finally:
            slot._fetch = None
            self._running -= 1
            done.set()
            self._wake.set()
        if outcome is None or slot._state == _REMOVED:
            return
        if outcome.published:
            slot._wanted = False
        if slot._again:
            slot._again = False
            self._queue(slot, urgent=True)
            return
        slot._state = _TIMER
        slot._refresh = outcome.published
        slot._ticket = ticket = next(self._tickets)
        heapq.heappush(self._heap, (anyio.current_time() + outcome.delay, ticket, slot))

    def __repr__(self) -> str:
        return f"<Schedule {self._name!r} timers={len(self._heap)} running={self._running}>"
