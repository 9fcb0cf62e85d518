"""``demo --fleet N``: N worker processes share tokens through a throwaway ``redis-server``.

The parent starts the fake servers and Redis, plans the lanes, starts the
worker processes (:mod:`._fleet_worker`), starts them all at once, shows
their progress, and adds up what they report.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

import anyio
import anyio.to_thread

from ..testing import RedisServer
from ..testing._process import ChildProcess
from ._config import DemoConfig
from ._fleet_worker import FleetJob, FleetResult, serve_fleet_worker
from ._progress import LIVE_INTERVAL, interrupt_handler, report_progress
from ._results import FleetSummary, Summary, combine_fleet_rows, combine_rows, split
from ._servers import fake_servers


__all__ = ["fleet_requirements", "run_fleet_demo"]

_START_TIMEOUT = 30.0  # bound on the worker processes' start
_FLEET_EXTRA = "pip install 'aiopay-auth[redis]'"


def fleet_requirements() -> str | None:
    """Why ``demo --fleet`` cannot run here, or ``None`` when it can.

    It needs a ``redis-server`` binary on the ``PATH`` and the ``redis``
    and ``cryptography`` packages (the ``redis`` extra).
    """
    if shutil.which("redis-server") is None:
        return "--fleet needs redis-server on the PATH (e.g. apt-get install redis-server)"
    for package in ("redis", "cryptography"):
        if importlib.util.find_spec(package) is None:
            return f"--fleet needs the {package} package: {_FLEET_EXTRA}"
    return None


class _FleetMember:
    """The parent's side of one worker process."""

    def __init__(self, job: FleetJob) -> None:
        self._child = ChildProcess(
            serve_fleet_worker, job, name=f"aiopay-auth demo worker {job.index}"
        )
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self.done = anyio.Event()
        self.figures: tuple[int, int, int] = (0, 0, 0)  # requests, failed, token fetches
        self.result: FleetResult | None = None

    async def listen(self) -> None:
        """Take the worker's messages until its result (or its end)."""
        try:
            while True:
                kind, payload = await self._child.receive()
                if kind == "ready":
                    self.ready.set()
                elif kind == "finished":
                    self.finished.set()
                elif kind == "progress":
                    self.figures = payload
                elif kind == "result":
                    self.result = payload
                    return
        except (EOFError, OSError):
            return
        finally:
            self.ready.set()  # a worker that died starting up must not be waited for
            self.finished.set()
            self.done.set()

    def send(self, message: str) -> None:
        if not self.done.is_set():
            self._child.send(message)

    async def close(self) -> None:
        await self._child.aclose()


class _FleetRun:
    """The parent's view of a fleet run, for the progress line and Ctrl-C."""

    def __init__(self, members: Sequence[_FleetMember]) -> None:
        self.members = members
        self.started = time.monotonic()
        self.stopping = False
        self.interrupted = False

    def requests(self) -> int:
        return sum(member.figures[0] for member in self.members)

    def failed(self) -> int:
        return sum(member.figures[1] for member in self.members)

    def fetches(self) -> int:
        return sum(member.figures[2] for member in self.members)

    def broadcast(self, message: str) -> None:
        for member in self.members:
            member.send(message)


@contextlib.asynccontextmanager
async def _local_redis() -> AsyncIterator[str]:
    """A throwaway ``redis-server`` for the run; its URL.

    It stays in the demo's process group, so whatever signals the demo's
    group (Ctrl-C, a closed terminal) reaches it too; otherwise it is
    stopped on the way out.
    """
    server = RedisServer()
    try:
        await anyio.to_thread.run_sync(server.start)
        yield server.url
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.shutdown)


async def run_fleet_demo(
    config: DemoConfig, *, progress: TextIO | None = None, live: bool = False
) -> FleetSummary:
    """Run the demo with ``config.fleet`` worker processes sharing tokens through Redis.

    Starts a ``redis-server`` on a free loopback port and the fake servers,
    then the worker processes: each adds the five providers to its own
    :class:`~aiopay_auth.TokenManager` with :meth:`RedisFleet.wrap
    <aiopay_auth.fleet.RedisFleet.wrap>` (tokens encrypted with a key made
    for the run) and runs its share of the workers. They all start sending
    at once, for ``config.duration`` seconds.

    Args:
        config: What to run; ``config.fleet`` processes.
        progress: Where to write progress lines (``None``: nowhere).
        live: Rewrite one line a few times per second (for a terminal).

    Returns:
        The summary; ``exit_status(result.summary)`` tells whether it went well.

    Raises:
        RuntimeError: redis-server or a worker process did not start or
            exited unexpectedly.
    """
    from cryptography.fernet import Fernet  # noqa: PLC0415 - the fleet mode's optional dependency

    processes = max(1, config.fleet)
    concurrency = split(config.concurrency, processes)
    pools = split(config.pool, processes)
    interval = LIVE_INTERVAL if live else 1.0
    key = Fernet.generate_key()
    members: list[_FleetMember] = []
    async with _local_redis() as redis_url, fake_servers(config.servers, config.lifetime) as fakes:
        try:
            for index in range(processes):
                job = FleetJob(
                    index=index,
                    lanes=fakes.lanes,
                    redis_url=redis_url,
                    key=key,
                    first_worker=sum(concurrency[:index]),
                    concurrency=concurrency[index],
                    pool=pools[index],
                    duration=config.duration,
                    progress_interval=interval,
                )
                members.append(_FleetMember(job))
            run = _FleetRun(members)
            async with anyio.create_task_group() as listening:
                for member in members:
                    listening.start_soon(member.listen)
                with interrupt_handler(run, on_stop=lambda: run.broadcast("stop")):
                    with anyio.fail_after(_START_TIMEOUT):
                        for member in members:
                            await member.ready.wait()
                    if any(member.done.is_set() for member in members):
                        msg = "a fleet worker process exited unexpectedly"
                        raise RuntimeError(msg)
                    run.broadcast("stop" if run.stopping else "go")
                    run.started = time.monotonic()
                    async with anyio.create_task_group() as reporting:
                        if progress is not None:
                            reporting.start_soon(report_progress, run, progress, live)
                        for member in members:
                            await member.finished.wait()
                        run.broadcast("stop")  # all together, once all are finished
                        for member in members:
                            await member.done.wait()
                        reporting.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for member in members:
                    await member.close()
        servers = await fakes.counters()
    results = [member.result for member in members]
    if any(result is None for result in results):
        msg = "a fleet worker process exited unexpectedly"
        raise RuntimeError(msg)
    done = [result for result in results if result is not None]
    rows = tuple(combine_rows(lane) for lane in zip(*(r.rows for r in done), strict=True))
    fleet_rows = tuple(
        combine_fleet_rows(lane) for lane in zip(*(r.fleet_rows for r in done), strict=True)
    )
    summary = Summary(
        config=config,
        elapsed=max(result.elapsed for result in done),
        rows=rows,
        servers=servers,
        interrupted=run.interrupted,
    )
    return FleetSummary(
        summary=summary,
        processes=processes,
        concurrency=concurrency,
        pools=pools,
        fleet_rows=fleet_rows,
    )
