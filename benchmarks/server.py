"""The server side of the benchmark: fake OAuth2 providers in a child process.

The child process (started with ``spawn``) runs two
:class:`~aiopay_auth.testing.FakeProvider` servers on 127.0.0.1, both in
the ``rfc6749`` dialect: ``long`` issues day-long tokens and ``short``
one-second tokens. Each serves its token endpoint (``/oauth/token``) and a
protected API (``/api``) that validates every bearer token it receives.
The parent talks to the child over a pipe: ``"stats"`` returns every
server's counters, ``"stop"`` ends it.

Running the servers in their own process, pinned to their own core when
the machine has two, means the client's event loop is measured alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Self

from aiopay_auth.testing import FakeProvider


LIFETIMES = {"long": 86_400.0, "short": 1.0}
"""Token lifetime of each server, in seconds."""

# A secret without characters that need form-encoding: some peers send
# HTTP Basic credentials without the RFC 6749 §2.3.1 encoding.
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"

_START_TIMEOUT = 30.0
_REPLY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Endpoint:
    """Where one fake provider listens, and the credentials it accepts."""

    name: str
    lifetime: float
    token_url: str
    api_base: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    @property
    def api_url(self) -> str:
        """The protected resource every scenario requests."""
        return self.api_base + "/payments"


@dataclass(frozen=True)
class Counters:
    """What one fake provider counted (copied from its public counters)."""

    token_calls: int = 0
    tokens_issued: int = 0
    api_calls: int = 0
    api_unauthorized: int = 0
    api_expired: int = 0

    @classmethod
    def of(cls, fake: FakeProvider) -> Counters:
        return cls(
            token_calls=fake.token_calls,
            tokens_issued=fake.tokens_issued,
            api_calls=fake.api_calls,
            api_unauthorized=fake.api_unauthorized,
            api_expired=fake.api_expired,
        )

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            token_calls=self.token_calls - other.token_calls,
            tokens_issued=self.tokens_issued - other.tokens_issued,
            api_calls=self.api_calls - other.api_calls,
            api_unauthorized=self.api_unauthorized - other.api_unauthorized,
            api_expired=self.api_expired - other.api_expired,
        )


# --- the child process ------------------------------------------------------


def _serve(conn: Connection, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve_async(conn))


async def _readable(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


async def _serve_async(conn: Connection) -> None:
    fakes = {
        name: FakeProvider(
            "rfc6749", lifetime=lifetime, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        )
        for name, lifetime in LIFETIMES.items()
    }
    async with AsyncExitStack() as stack:
        for fake in fakes.values():
            await stack.enter_async_context(fake)
        conn.send(
            {
                name: Endpoint(
                    name=name,
                    lifetime=fake.lifetime,
                    token_url=str(fake.token_url),
                    api_base=str(fake.api_base),
                )
                for name, fake in fakes.items()
            }
        )
        while True:
            await _readable(conn)
            try:
                command = conn.recv()
            except EOFError:  # the parent went away
                return
            if command != "stats":
                return
            conn.send({name: Counters.of(fake) for name, fake in fakes.items()})


# --- the parent's handle ----------------------------------------------------


class ServerProcess:
    """The fake providers in a child process; a context manager.

    Args:
        pin: Pin the child to the last core and this process to the others
            (when there are at least two), so that they never share a core.
    """

    def __init__(self, *, pin: bool = True) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.pinned = pin and len(cores) >= 2
        self._original_cpus = set(cores)
        self._server_cpu = cores[-1] if self.pinned else None
        self._client_cpus = set(cores[:-1]) if self.pinned else set(cores)
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.endpoints: dict[str, Endpoint] = {}

    def __enter__(self) -> Self:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_serve, args=(child, self._server_cpu), name="bench-server", daemon=True
        )
        process.start()
        child.close()
        self._conn, self._process = parent, process
        if not parent.poll(_START_TIMEOUT):
            self.__exit__(None, None, None)
            msg = "the benchmark server did not start"
            raise RuntimeError(msg)
        self.endpoints = parent.recv()
        os.sched_setaffinity(0, self._client_cpus)
        return self

    def cpu_time(self) -> float:
        """CPU seconds the server process has used so far (from ``/proc``)."""
        process = self._process
        assert process is not None
        with open(f"/proc/{process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def machine_busy() -> float:
        """CPU seconds every core of the machine has been busy so far (``/proc/stat``)."""
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def stats(self, name: str) -> Counters:
        """One server's counters, now."""
        conn = self._conn
        assert conn is not None
        conn.send("stats")
        if not conn.poll(_REPLY_TIMEOUT):
            msg = "the benchmark server did not answer"
            raise RuntimeError(msg)
        counters: dict[str, Counters] = conn.recv()
        return counters[name]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.sched_setaffinity(0, self._original_cpus)
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send("stop")
            conn.close()
        if process is not None:
            process.join(_STOP_TIMEOUT)
            if process.is_alive():
                process.terminate()
                process.join(_STOP_TIMEOUT)
