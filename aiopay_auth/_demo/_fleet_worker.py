"""One worker process of ``demo --fleet``: its share of the workers, tokens shared through Redis.

The parent (:mod:`._fleet`) starts it with
:class:`~aiopay_auth.testing._process.ChildProcess` and drives it over the
pipe; see :func:`serve_fleet_worker` for the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

import anyio
import attrs

from .._fetch import TokenSource
from .._holder import TokenHolder
from .._manager import TokenManager
from ..testing._process import receive
from ._lanes import Lane
from ._results import FleetRow, ProviderRow
from ._run import RunState, run_workers


__all__ = ["FleetJob", "FleetResult", "serve_fleet_worker"]

_LEASE_TTL = 10.0  # seconds; longer than any demo token request takes
# Seconds a Redis command may take; the fleet still cuts it to half of what is
# left of the served token. The default (0.5 s) is overrun on a loaded machine.
_REDIS_TIMEOUT = 2.0


@attrs.frozen(kw_only=True)
class FleetJob:
    """What one worker process runs (pickled to it; never on a command line)."""

    index: int
    lanes: tuple[Lane, ...]
    redis_url: str
    key: bytes = attrs.field(repr=False)
    first_worker: int
    concurrency: int
    pool: int
    duration: float
    progress_interval: float


@attrs.frozen(kw_only=True)
class FleetResult:
    """What one worker process reports at the end, one entry per lane."""

    rows: tuple[ProviderRow, ...]
    fleet_rows: tuple[FleetRow, ...]
    elapsed: float


def serve_fleet_worker(conn: Connection, job: FleetJob) -> None:
    """A fleet worker process: run *job* when told to go, report, exit.

    Sends ``("ready", None)`` once started; on ``"go"`` adds its providers
    and runs until the duration is over or ``"stop"`` comes, sending
    ``("progress", (requests, failed, token_fetches))`` now and then. Then
    sends ``("finished", None)``, keeps its tokens fresh until ``"stop"``
    (sent once every process is finished), and ends with ``("result",
    FleetResult)``. Ctrl-C is left to the parent, as for the servers'
    process; if the parent goes away, the worker stops.

    Args:
        conn: This end of the pipe to the parent.
        job: What to run.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already so since birth
    try:
        with contextlib.suppress(EOFError, OSError):  # the parent went away
            asyncio.run(_fleet_worker(conn, job))
    finally:
        conn.close()


async def _fleet_worker(conn: Connection, job: FleetJob) -> None:
    import redis.asyncio  # noqa: PLC0415 - the fleet mode's optional dependency

    from ..fleet import RedisFleet, SharedTokenSource  # noqa: PLC0415

    client = redis.asyncio.Redis.from_url(job.redis_url)
    fleet = RedisFleet(
        client, encryption_key=job.key, lease_ttl=_LEASE_TTL, redis_timeout=_REDIS_TIMEOUT
    )
    sources: dict[str, SharedTokenSource] = {}

    def wrap(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        source = sources[holder.name] = fleet.wrap(holder, inner)
        return source

    def fetches() -> int:
        return sum(source.http_fetches for source in sources.values())

    try:
        async with TokenManager(token_source=wrap) as tokens:
            conn.send(("ready", None))
            go = await receive(conn) == "go"
            # Every process adds its providers on "go" and keeps them until all
            # are finished (below), so that the refreshers of the fleet run over
            # the same span: none fetches alone while the others start or stop.
            holders = tuple(tokens.add(lane.provider) for lane in job.lanes)
            run = RunState(job.lanes, holders)
            run.stopping = not go
            elapsed = await run_workers(
                run,
                tokens,
                pool=job.pool,
                duration=job.duration,
                workers=range(job.first_worker, job.first_worker + job.concurrency),
                beside=[
                    functools.partial(_listen_for_stop, conn, run),
                    functools.partial(_send_progress, conn, run, fetches, job.progress_interval),
                ],
            )
            conn.send(("finished", None))
            while await receive(conn) != "stop":
                pass
            await tokens.aclose()
    finally:
        await client.aclose()
    rows, fleet_rows = [], []
    for lane, tally, holder in zip(run.lanes, run.tallies, holders, strict=True):
        source, stats = sources[holder.name], holder.health()
        rows.append(
            attrs.evolve(
                ProviderRow.of(lane.provider.name, lane.server, tally, stats),
                fetches=source.http_fetches,
            )
        )
        fleet_rows.append(
            FleetRow(
                provider=lane.provider.name,
                shared_hits=source.shared_hits,
                alone=source.http_fetches + source.shared_hits,
                stores=(stats.store or "local",),
            )
        )
    conn.send(
        ("result", FleetResult(rows=tuple(rows), fleet_rows=tuple(fleet_rows), elapsed=elapsed))
    )


async def _listen_for_stop(conn: Connection, run: RunState) -> None:
    try:
        while await receive(conn) != "stop":
            pass
    finally:  # "stop", or the parent went away
        run.stopping = True


async def _send_progress(
    conn: Connection, run: RunState, fetches: Callable[[], int], interval: float
) -> None:
    while True:
        await anyio.sleep(interval)
        conn.send(("progress", (run.requests(), run.failed(), fetches())))
