"""The demo's run in one process: workers send payments round-robin through one session."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

import aiohttp
import anyio

from .._holder import TokenHolder
from .._manager import TokenManager
from ._config import DemoConfig
from ._lanes import Lane, payment_body
from ._progress import interrupt_handler, report_progress
from ._results import ProviderRow, Summary, Tally
from ._servers import fake_servers


__all__ = [
    "REQUEST_TIMEOUT",
    "RunState",
    "post_counted",
    "run_demo",
    "run_workers",
    "send_payments",
]

REQUEST_TIMEOUT = 30.0
"""Bound on one demo request, queueing for the pool included (seconds)."""


class RunState:
    """What the workers of one process share with the progress reporter and the Ctrl-C handler."""

    __slots__ = ("deadline", "holders", "interrupted", "lanes", "started", "stopping", "tallies")

    def __init__(self, lanes: tuple[Lane, ...], holders: tuple[TokenHolder, ...]) -> None:
        self.lanes = lanes
        self.holders = holders
        self.tallies = tuple(Tally() for _ in lanes)
        self.started = time.monotonic()
        self.deadline = math.inf
        self.stopping = False
        self.interrupted = False

    def requests(self) -> int:
        """Requests sent so far."""
        return sum(tally.requests for tally in self.tallies)

    def failed(self) -> int:
        """Requests failed so far."""
        return sum(tally.failed for tally in self.tallies)

    def fetches(self) -> int:
        """Token requests sent so far."""
        return sum(holder.health().fetches for holder in self.holders)


async def post_counted(
    tally: Tally, request: AbstractAsyncContextManager[aiohttp.ClientResponse]
) -> bool:
    """Send *request*, read its answer and count it in *tally*; whether it was a 2xx.

    Every failure, an exception or a non-2xx status, is counted and described.
    """
    try:
        async with request as response:
            await response.read()
            status = response.status
    except Exception as exc:  # every failure is counted and reported
        tally.requests += 1
        tally.fail(f"{type(exc).__name__}: {exc}"[:120])
        return False
    tally.requests += 1
    if 200 <= status < 300:
        return True
    tally.fail(f"HTTP {status}")
    return False


async def send_payments(http: aiohttp.ClientSession, run: RunState, index: int) -> None:
    """Send payments round-robin over the providers until the run ends."""
    lanes, tallies = run.lanes, run.tallies
    count = len(lanes)
    position = index % count
    sent = 0
    while not run.stopping and time.monotonic() < run.deadline:
        lane, tally = lanes[position], tallies[position]
        position = (position + 1) % count
        sent += 1
        body = payment_body(lane, f"demo-{index}-{sent}")
        await post_counted(tally, http.post(lane.url, data=body, headers=lane.headers))


async def run_workers(
    run: RunState,
    tokens: TokenManager,
    *,
    pool: int,
    duration: float,
    workers: range,
    beside: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> float:
    """Send payments for *duration* seconds through one pooled session of *run*'s holders.

    Args:
        run: The run's state; its clock starts here.
        tokens: The manager of *run*'s holders.
        pool: Connections in the session's pool.
        duration: Seconds the workers send.
        workers: One worker per index (its first reference number).
        beside: Tasks that run beside the workers, cancelled once they end.

    Returns:
        Seconds from the first request to the last response.
    """
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with tokens.session(*run.holders, limit=pool, timeout=timeout) as http:
        run.started = time.monotonic()
        run.deadline = run.started + duration
        async with anyio.create_task_group() as helpers:
            for task in beside:
                helpers.start_soon(task)
            async with anyio.create_task_group() as fan:
                for index in workers:
                    fan.start_soon(send_payments, http, run, index)
            helpers.cancel_scope.cancel()
        return time.monotonic() - run.started


async def run_demo(
    config: DemoConfig, *, progress: TextIO | None = None, live: bool = False
) -> Summary:
    """Run the demo and return its summary.

    Args:
        config: What to run.
        progress: Where to write progress lines (``None``: nowhere).
        live: Rewrite one line a few times per second (for a terminal)
            instead of writing a line every five seconds.

    Returns:
        The summary; :func:`exit_status` tells whether it went well.
    """
    async with fake_servers(config.servers, config.lifetime) as fleet, TokenManager() as tokens:
        holders = tuple(tokens.add(lane.provider) for lane in fleet.lanes)
        run = RunState(fleet.lanes, holders)
        beside = (
            [] if progress is None else [functools.partial(report_progress, run, progress, live)]
        )
        with interrupt_handler(run):
            elapsed = await run_workers(
                run,
                tokens,
                pool=config.pool,
                duration=config.duration,
                workers=range(config.concurrency),
                beside=beside,
            )
        await tokens.aclose()
        servers = await fleet.counters()
    rows = tuple(
        ProviderRow.of(lane.provider.name, lane.server, tally, holder.health())
        for lane, tally, holder in zip(run.lanes, run.tallies, holders, strict=True)
    )
    return Summary(
        config=config,
        elapsed=elapsed,
        rows=rows,
        servers=servers,
        interrupted=run.interrupted,
    )
