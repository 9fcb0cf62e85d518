"""
A fleet of real worker processes sharing tokens through a real redis-server.

Each worker is ``python -m tests.fleet_worker`` (see tests/fleet_worker.py):
its own TokenManager with ``RedisFleet(...).wrap`` and a fan of request
loops. The fake provider runs in this process, so its counters are the
fleet-wide truth; workers report JSON lines on stdout, read here without
blocking the loop that serves them. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio
from anyio.abc import Process, TaskGroup
from cryptography.fernet import Fernet

from aiopay_auth.fleet import fleet_key
from aiopay_auth.testing import FakeProvider, Scripted, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .fleet_worker import KEY_ENV
from .helpers import eventually
from .redis_server import RedisServer


pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


@pytest.fixture(name="redis_url")
async def _redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None:  # an earlier test failed while it was stopped
        await anyio.to_thread.run_sync(redis_server.start)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return redis_server.url


class Worker:
    """One worker process, and what it wrote so far."""

    def __init__(self, name: str, process: Process) -> None:
        self.name = name
        self.process = process
        self.events: list[tuple[float, Event]] = []  # (when this test read it, event)
        self.noise: list[bytes] = []  # stdout lines that are not JSON
        self.stderr = bytearray()
        self.stdout_closed = anyio.Event()

    async def read_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        pending = b""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            now = time.monotonic()
            for line in lines:
                try:
                    self.events.append((now, json.loads(line)))
                except ValueError:
                    self.noise.append(line)
        if pending:
            self.noise.append(pending)
        self.stdout_closed.set()

    async def read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        async for chunk in stream:
            self.stderr += chunk

    def last(self, kind: str) -> Event | None:
        for _, event in reversed(self.events):
            if event["event"] == kind:
                return event
        return None

    def first_after(self, kind: str, since: float, **wanted: object) -> float | None:
        """When the first *kind* event after *since* with these fields was read."""
        for at, event in self.events:
            if (
                at >= since
                and event["event"] == kind
                and all(event.get(k) == v for k, v in wanted.items())
            ):
                return at
        return None

    def progress(self, field: str) -> Any:
        event = self.last("progress")
        return None if event is None else event[field]

    @property
    def summary(self) -> Event | None:
        return self.last("summary")

    async def stop(self) -> None:
        """Ask the worker to end its run now (it still writes its summary)."""
        stdin = self.process.stdin
        assert stdin is not None
        await stdin.send(b"stop\n")

    def __repr__(self) -> str:
        return f"<worker {self.name} pid={self.process.pid} rc={self.process.returncode}>"


class Fleet:
    """Starts worker processes; every one is killed, if still running, at the end."""

    def __init__(self, tg: TaskGroup, redis_url: str, fake: FakeProvider) -> None:
        self.tg = tg
        self.redis_url = redis_url
        self.fake = fake
        self.key = Fernet.generate_key().decode()  # shared by the workers that encrypt
        self.workers: list[Worker] = []

    async def start(
        self,
        name: str,
        *,
        seconds: float,
        concurrency: int = 20,
        pool: int = 10,
        encrypt: bool = False,
        **options: float | str,
    ) -> Worker:
        fake = self.fake
        command = [
            sys.executable,
            "-W",
            "error",
            "-m",
            "tests.fleet_worker",
            "--redis",
            self.redis_url,
            "--dialect",
            fake.dialect,
            "--token-url",
            str(fake.token_url),
            "--api",
            str(provider_for(fake).api[0]),
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
            "--pool",
            str(pool),
            "--stdin-control",
        ]
        for option, value in options.items():
            command += [f"--{option.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        if encrypt:
            env[KEY_ENV] = self.key
        process = await anyio.open_process(command, cwd=ROOT, env=env)
        worker = Worker(name, process)
        self.workers.append(worker)
        self.tg.start_soon(worker.read_stdout)
        self.tg.start_soon(worker.read_stderr)
        return worker

    async def finish(self, *workers: Worker, within: float = 30.0) -> list[Event]:
        """Wait for *workers* to exit; each must exit 0 with a summary and a clean stderr."""
        summaries = []
        with anyio.fail_after(within):
            for worker in workers:
                await worker.process.wait()
                await worker.stdout_closed.wait()  # read to the end
        for worker in workers:
            stderr = worker.stderr.decode(errors="replace")
            assert 0 == worker.process.returncode, (worker, stderr)
            assert [] == worker.noise, worker
            assert "Traceback" not in stderr, stderr
            assert "Exception ignored" not in stderr, stderr  # e.g. an unclosed resource
            summary = worker.summary
            assert summary is not None, worker
            summaries.append(summary)
        self.check_no_secret_shown()
        return summaries

    def check_no_secret_shown(self) -> None:
        fake = self.fake
        secrets = [fake.client_secret, fake.password, *fake.issued_tokens]
        secrets += fake.issued_refresh_tokens
        for worker in self.workers:
            shown = json.dumps([event for _, event in worker.events]) + worker.stderr.decode()
            for secret in secrets:
                assert secret not in shown, worker

    async def kill_all(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


@asynccontextmanager
async def fleet_of(redis_url: str, fake: FakeProvider) -> AsyncIterator[Fleet]:
    async with anyio.create_task_group() as tg:
        fleet = Fleet(tg, redis_url, fake)
        try:
            yield fleet
        finally:
            with anyio.CancelScope(shield=True):
                await fleet.kill_all()


def total(summaries: list[Event], field: str) -> int:
    return sum(int(summary[field]) for summary in summaries)


# --- the tests ----------------------------------------------------------------


@pytest.mark.slow
async def test_eight_processes_fetch_about_one_token_per_refresh_cycle(
    fake_provider: FakeProviderFactory, redis_url: str
) -> None:
    lifetime, seconds, processes = 2.0, 30.0, 8
    fake = await fake_provider("cm", lifetime=lifetime)
    async with fleet_of(redis_url, fake) as fleet:
        workers = [
            await fleet.start(f"w{i}", seconds=seconds, concurrency=100, pool=20, encrypt=True)
            for i in range(processes)
        ]
        summaries = await fleet.finish(*workers, within=seconds + 60)
    starts = [worker.first_after("started", 0.0) for worker in workers]
    assert None not in starts
    # From the first worker's start to the last one's end.
    window = max(at for worker in workers for at, _ in worker.events) - min(
        at for at in starts if at is not None
    )
    # Tokens are refreshed at half-life (RefreshPolicy: margin = lifetime / 2 for
    # short tokens), so the fleet needs one new token per cycle of lifetime / 2.
    cycles = window / (lifetime / 2)
    requests, failed = total(summaries, "requests"), total(summaries, "failed")
    alone = total(summaries, "tokens_used")  # each process fetching each token it used
    print(
        f"\n8 processes x 100 loops, pool 20, {lifetime:g} s tokens, {window:.1f} s: "
        f"{requests:,} requests, {failed} failed; {fake.token_calls} token calls "
        f"for {cycles:.1f} refresh cycles ({fake.token_calls / cycles:.2f} per cycle); "
        f"per-process fetching: {alone} tokens used by the processes, "
        f"{processes * cycles:.0f} = 8 x cycles; shared hits "
        f"{total(summaries, 'shared_hits')}; 401s {fake.api_unauthorized}"
    )
    for summary in summaries:
        assert 0 == summary["failed"], summary
        assert summary["requests"] > 1000, summary
        assert 0 == summary["failures"], summary
        assert "shared" == summary["store"], summary
    assert 0 == fake.api_unauthorized
    assert 0 == fake.api_expired
    # Within one or two token calls per refresh cycle for the whole fleet...
    assert fake.token_calls <= 2 * cycles
    # ... where fetching alone would have cost about eight per cycle.
    assert alone >= 0.8 * processes * cycles
    assert 4 * fake.token_calls <= alone
    # The workers' own count agrees (a fetch cut short at exit may not arrive).
    assert 0 <= total(summaries, "http_fetches") - fake.token_calls <= processes


async def test_lease_holder_killed_mid_refresh_another_takes_over(
    fake_provider: FakeProviderFactory, redis_url: str
) -> None:
    lease_ttl = 3.0
    fake = await fake_provider("cm", lifetime=30)
    # The first token call hangs (until the fake closes): its sender dies holding the lease.
    fake.queue(Scripted(delay=120, drop=True))
    client = redis.asyncio.Redis.from_url(redis_url)
    lease_key = f"aiopay_auth:{fleet_key(provider_for(fake))}:lease"
    try:
        async with fleet_of(redis_url, fake) as fleet:
            options: dict[str, Any] = {"seconds": 30, "lease_ttl": lease_ttl, "progress": 0.02}
            workers = [await fleet.start("a", **options), await fleet.start("b", **options)]
            await eventually(lambda: fake.token_calls >= 1, within=20)
            leased_at = time.monotonic()
            await eventually(
                lambda: all(w.last("progress") is not None for w in workers), within=20
            )
            # The lease holder is the one that sent a token request.
            await eventually(
                lambda: any(w.progress("http_fetches") == 1 for w in workers), within=5
            )
            (holder,) = [w for w in workers if w.progress("http_fetches") == 1]
            (other,) = [w for w in workers if w is not holder]
            assert 0 == other.progress("http_fetches")
            assert not other.progress("has_token")
            # Both are up and the lease is still held: the other one is waiting on it.
            assert await client.pttl(lease_key) > 0
            holder.process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await eventually(lambda: fake.tokens_issued >= 1, within=lease_ttl + 3)
            took_over = time.monotonic()
            await eventually(lambda: other.last("token") is not None, within=3)
            assert -signal.SIGKILL == await holder.process.wait()
            # Keep serving for a moment on the new token, then stop.
            requests = other.progress("requests")
            await eventually(lambda: other.progress("requests") > requests + 100, within=5)
            await other.stop()
            (summary,) = await fleet.finish(other)
            stored = await client.exists(f"aiopay_auth:{fleet_key(provider_for(fake))}:token")
    finally:
        await client.aclose()
    print(
        f"\nlease holder killed {killed_at - leased_at:.2f} s into its refresh; "
        f"the other process had a token {took_over - killed_at:.2f} s later, "
        f"{took_over - leased_at:.2f} s after the dead lease was taken "
        f"(lease_ttl {lease_ttl:g} s); "
        f"{summary['requests']:,} requests, {summary['failed']} failed"
    )
    # Taken over when the dead holder's lease ran out, not after giving up on the fleet.
    assert took_over - leased_at <= lease_ttl + 1.0
    assert took_over - leased_at >= lease_ttl - 0.5
    assert 2 == fake.token_calls  # the dead one's, then the new holder's
    assert 1 == summary["http_fetches"]
    assert "shared" == summary["store"]
    assert 1 == stored  # stored under the new holder's lease
    assert 0 == summary["failed"], summary
    assert 0 == summary["failures"], summary
    assert summary["requests"] > 100
    assert 0 == fake.api_unauthorized


async def test_redis_stopped_and_restarted_workers_keep_serving_then_rejoin(
    fake_provider: FakeProviderFactory, redis_server: RedisServer, redis_url: str
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    options: dict[str, Any] = {"seconds": 60, "progress": 0.05, "redis_timeout": 0.3}
    marks: dict[str, float] = {}
    try:
        async with fleet_of(redis_url, fake) as fleet:
            workers = [await fleet.start(f"w{i}", **options) for i in range(2)]

            def stores() -> set[Any]:
                return {w.progress("store") for w in workers}

            def hits() -> int:
                return sum(w.progress("shared_hits") or 0 for w in workers)

            def serving(since: dict[str, int]) -> bool:
                return all(
                    w.progress("has_token") and w.progress("requests") > since[w.name] + 100
                    for w in workers
                )

            await eventually(lambda: stores() == {"shared"} and hits() >= 2, within=20)
            marks["down"] = time.monotonic()
            await anyio.to_thread.run_sync(redis_server.stop)
            # Degraded: each fetches alone, and keeps serving.
            await eventually(lambda: stores() == {"local"}, within=5)
            calls_down = fake.token_calls
            requests = {w.name: w.progress("requests") for w in workers}
            await eventually(lambda: fake.token_calls >= calls_down + 4, within=5)
            await eventually(lambda: serving(requests), within=5)
            marks["up"] = time.monotonic()
            await anyio.to_thread.run_sync(redis_server.start)
            await eventually(lambda: stores() == {"shared"}, within=8)
            hits_back = hits()
            await eventually(lambda: hits() > hits_back, within=5)
            requests = {w.name: w.progress("requests") for w in workers}
            await eventually(lambda: serving(requests), within=5)
            for worker in workers:
                await worker.stop()
            summaries = await fleet.finish(*workers)
    finally:
        if redis_server.process is None:
            await anyio.to_thread.run_sync(redis_server.start)
    transitions = []
    for worker in workers:
        local = worker.first_after("progress", marks["down"], store="local")
        shared = worker.first_after("progress", marks["up"], store="shared")
        assert local is not None and shared is not None
        transitions.append(
            f"{worker.name}: local {local - marks['down']:.2f} s after the stop, "
            f"shared {shared - marks['up']:.2f} s after the restart"
        )
    print(
        "\nredis stopped for "
        f"{marks['up'] - marks['down']:.1f} s: "
        + "; ".join(transitions)
        + f"; {total(summaries, 'requests'):,} requests, {total(summaries, 'failed')} failed, "
        f"{fake.token_calls} token calls"
    )
    for summary in summaries:
        assert 0 == summary["failed"], summary
        assert 0 == summary["failures"], summary
        assert "shared" == summary["store"], summary
    assert 0 == fake.api_unauthorized


async def test_redis_lost_mid_refresh_never_spends_a_refresh_token_twice(
    fake_provider: FakeProviderFactory, redis_server: RedisServer, redis_url: str
) -> None:
    # Redis goes away while the lease holder's refresh grant is in flight: the
    # token it brings cannot be stored, but it is good, and its refresh token
    # has been spent; asking again with that one would be refused.
    fake = await fake_provider("payme", lifetime=4.0)
    try:
        async with fleet_of(redis_url, fake) as fleet:
            options: dict[str, Any] = {"seconds": 60, "progress": 0.05, "redis_timeout": 0.3}
            worker = await fleet.start("w", **options)
            await eventually(lambda: fake.tokens_issued >= 1, within=20)
            fake.token_delay = 1.0
            await eventually(lambda: fake.token_calls >= 2, within=5)  # the refresh, slow
            await anyio.to_thread.run_sync(redis_server.stop)
            await eventually(lambda: (worker.progress("refreshes") or 0) >= 1, within=5)
            assert "local" == worker.progress("store")
            calls_while_down = fake.token_calls
            rejected_while_down = list(fake.rejected)
            fake.token_delay = 0.0
            await anyio.to_thread.run_sync(redis_server.start)
            await eventually(lambda: (worker.progress("refreshes") or 0) >= 2, within=8)
            await eventually(lambda: worker.progress("store") == "shared", within=5)
            await worker.stop()
            (summary,) = await fleet.finish(worker)
    finally:
        if redis_server.process is None:
            await anyio.to_thread.run_sync(redis_server.start)
    assert [] == rejected_while_down
    assert 2 == calls_while_down  # the token fetched under the lease was kept, not fetched again
    assert [] == fake.rejected
    assert 0 == summary["failed"], summary
    assert 0 == summary["failures"], summary


async def test_two_processes_racing_on_a_rotating_refresh_token(
    fake_provider: FakeProviderFactory, redis_url: str
) -> None:
    # Pay-me rotates refresh tokens: one spent twice is refused with invalid_grant.
    fake = await fake_provider("payme", lifetime=1.0)
    assert fake.rotate_refresh_tokens
    async with fleet_of(redis_url, fake) as fleet:
        workers = [await fleet.start(f"w{i}", seconds=60, encrypt=True) for i in range(2)]
        await eventually(lambda: fake.tokens_issued >= 16, within=30)
        for worker in workers:
            await worker.stop()
        summaries = await fleet.finish(*workers)
    # Every refresh spent the one refresh token before it: only the newest is unspent.
    unspent = sum(fake.spend_refresh_token(rt) for rt in list(fake.issued_refresh_tokens))
    print(
        f"\ntwo processes on rotating refresh tokens: {fake.tokens_issued} tokens issued, "
        f"token calls by process {[s['http_fetches'] for s in summaries]}, "
        f"{len(fake.rejected)} rejected, {unspent} refresh token left unspent"
    )
    assert [] == fake.rejected  # no invalid_grant: no refresh token reused
    assert 1 == unspent
    assert len(fake.issued_refresh_tokens) == fake.tokens_issued
    for summary in summaries:
        assert summary["http_fetches"] >= 1, summary  # both won the lease at times
        assert 0 == summary["failed"], summary
        assert 0 == summary["failures"], summary
        assert summary["requests"] > 0, summary
    assert 0 == fake.api_unauthorized
