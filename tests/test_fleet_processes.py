"""
A fleet of real worker processes sharing tokens through real Redis set-ups.

Each test that can runs on a single ``redis-server``, a 3-master Redis
Cluster and a Sentinel-fronted primary (the ``redis_setup`` fixture).

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

from aiopay_auth._oauth import lifetime_from
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.testing import FakeProvider, Scripted, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .conftest import RedisSetup
from .fleet_worker import KEY_ENV
from .helpers import eventually
from .redis_server import RedisServer, client_for, close_client


pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


@pytest.fixture(name="single")
async def _single(redis_server: RedisServer) -> RedisServer:
    """The single server, running and empty (for the tests that need only one set-up)."""
    if redis_server.process is None:  # an earlier test failed while it was stopped
        await anyio.to_thread.run_sync(redis_server.start)
    await anyio.to_thread.run_sync(redis_server.flushall)
    return redis_server


def keys_of(fake: FakeProvider) -> tuple[str, str, str]:
    """The token key, lease key and channel the fleet uses for *fake*'s credential."""
    return RedisFleet(redis.asyncio.Redis(), unencrypted=True).keys(provider_for(fake))


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

    def __init__(self, tg: TaskGroup, setup: RedisSetup, *fakes: FakeProvider) -> None:
        self.tg = tg
        self.setup = setup
        self.fake = fakes[0]
        self.fakes = fakes
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
        command = [
            sys.executable,
            "-W",
            "error",
            "-m",
            "tests.fleet_worker",
            "--redis-kind",
            self.setup.kind,
            "--redis-port",
            str(self.setup.client_port),
            "--dialect",
            self.fake.dialect,
        ]
        for fake in self.fakes:
            command += ["--token-url", str(fake.token_url), "--api", str(provider_for(fake).api[0])]
        command += [
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
        secrets: list[str] = []
        for fake in self.fakes:
            secrets += [fake.client_secret, fake.password, *fake.issued_tokens]
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
async def fleet_of(setup: RedisSetup, *fakes: FakeProvider) -> AsyncIterator[Fleet]:
    async with anyio.create_task_group() as tg:
        fleet = Fleet(tg, setup, *fakes)
        try:
            yield fleet
        finally:
            with anyio.CancelScope(shield=True):
                await fleet.kill_all()


def _scale() -> tuple[float, float, int, int]:
    """Token lifetime, seconds, worker processes and request loops of each, for the run below.

    ``AIOPAY_FLEET_SCALE=issue`` runs the scale issue 10 asked for: 8
    processes, 2-second tokens, 30 s. The default is the quick run of the
    whole suite. ``LIFETIME:SECONDS:PROCESSES:LOOPS`` picks any other.
    """
    scale = os.environ.get("AIOPAY_FLEET_SCALE", "quick")
    named = {"quick": "3:8:4:30", "issue": "2:30:8:30"}
    lifetime, seconds, processes, loops = named.get(scale, scale).split(":")
    return float(lifetime), float(seconds), int(processes), int(loops)


SCALE = _scale()


def total(summaries: list[Event], field: str) -> int:
    return sum(int(summary[field]) for summary in summaries)


# --- the tests ----------------------------------------------------------------


@pytest.mark.slow
async def test_processes_on_three_credentials_fetch_about_one_token_per_refresh_cycle(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup
) -> None:
    # Issue 10 asks for 8 processes, 2-second tokens, 30 s
    # (AIOPAY_FLEET_SCALE=issue). The suite's default, on a shared 2-core
    # machine: 4 processes for 8 s on each of three set-ups, still >= 5
    # refresh cycles per credential (3-second tokens, believed for 2 s, are
    # refreshed every second). Tokens of expires_in 2 are believed for 1 s:
    # the refresh starts 0.5 s before expiry and gives Redis 0.25 s per
    # operation; a loaded machine's healthy Redis can take that long, and then
    # a process rightly fetches alone, which costs token calls (measured in
    # docs/fleet.md).
    lifetime, seconds, processes, loops = SCALE
    fakes = [await fake_provider("cm", lifetime=lifetime) for _ in range(3)]
    async with fleet_of(redis_setup, *fakes) as fleet:
        workers = [
            await fleet.start(f"w{i}", seconds=seconds, concurrency=loops, pool=10, encrypt=True)
            for i in range(processes)
        ]
        summaries = await fleet.finish(*workers, within=seconds + 60)
    starts = [worker.first_after("started", 0.0) for worker in workers]
    assert None not in starts
    # From the first worker's start to the last one's end.
    window = max(at for worker in workers for at, _ in worker.events) - min(
        at for at in starts if at is not None
    )
    # The fake reports a whole-second expires_in, which the SDK believes for one
    # second less (lifetime_from); such short tokens are refreshed at half their
    # believed life (RefreshPolicy: margin = lifetime / 2), so each credential
    # needs one new token per cycle of believed / 2.
    believed = lifetime_from(int(lifetime) if lifetime.is_integer() else lifetime, lifetime)
    cycles = window / (believed / 2)
    calls = [fake.token_calls for fake in fakes]
    requests, failed = total(summaries, "requests"), total(summaries, "failed")
    alone = total(summaries, "tokens_used")  # each process fetching each token it used
    print(
        f"\n{redis_setup.kind}: {processes} processes x 3 credentials, {lifetime:g} s tokens, "
        f"{window:.1f} s ({cycles:.1f} refresh cycles): {requests:,} requests, {failed} failed; "
        f"token calls per credential {calls} "
        f"({max(calls) / cycles:.2f} per cycle at most); per-process fetching: {alone} tokens "
        f"used; shared hits {total(summaries, 'shared_hits')}; "
        f"401s {sum(f.api_unauthorized for f in fakes)} "
        f"({sum(f.api_expired for f in fakes)} for an expired token); "
        f"requests that waited for a token {total(summaries, 'waits')}; "
        f"stores {[summary['store'] for summary in summaries]}"
    )
    assert cycles >= 5
    for summary in summaries:
        assert 0 == summary["failed"], summary
        assert summary["requests"] > 100, summary
        assert 0 == summary["failures"], summary
        assert "shared" == summary["store"], summary
    for fake in fakes:
        assert 0 == fake.api_unauthorized
        assert 0 == fake.api_expired
        # About one token call per refresh cycle for the whole fleet, plus the
        # first token, where fetching alone would have cost one per process.
        assert fake.token_calls <= 1.2 * cycles + 1
    assert alone >= 0.8 * 3 * processes * (cycles - 1)
    # The workers' own count agrees, up to one fetch per worker and credential
    # at the edge of the run: one cut short at exit never arrives, and one sent
    # after a worker wrote its summary arrives uncounted.
    assert abs(total(summaries, "http_fetches") - sum(calls)) <= processes * 3


async def test_lease_holder_killed_mid_refresh_another_takes_over(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup
) -> None:
    lease_ttl = 3.0
    fake = await fake_provider("cm", lifetime=30)
    # The first token call hangs (until the fake closes): its sender dies holding the lease.
    fake.queue(Scripted(delay=120, drop=True))
    client = client_for(redis_setup.kind, redis_setup.client_port)
    token_key, lease_key, _ = keys_of(fake)
    samples: list[tuple[int, Any, float]] = []  # (token calls, lease, when)
    try:
        async with fleet_of(redis_setup, fake) as fleet:
            options: dict[str, Any] = {"seconds": 30, "lease_ttl": lease_ttl, "progress": 0.02}
            workers = [await fleet.start("a", **options), await fleet.start("b", **options)]
            await eventually(lambda: fake.token_calls >= 1, within=20)
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
            dead_fence = await client.get(lease_key)
            assert dead_fence is not None
            holder.process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            # Watch the lease: read the provider's count first, then the lease.
            # While the lease still holds the dead fence, no one may have asked.
            while fake.tokens_issued < 1:
                calls = fake.token_calls
                samples.append((calls, await client.get(lease_key), time.monotonic()))
                assert time.monotonic() - killed_at < 2 * lease_ttl, "no takeover"
                await anyio.sleep(0.01)
            took_over = time.monotonic()
            await eventually(lambda: other.last("token") is not None, within=3)
            assert -signal.SIGKILL == await holder.process.wait()
            # Keep serving for a moment on the new token, then stop.
            requests = other.progress("requests")
            await eventually(lambda: other.progress("requests") > requests + 100, within=5)
            await other.stop()
            (summary,) = await fleet.finish(other)
            stored = await client.exists(token_key)
    finally:
        await close_client(client)
    held = [at for calls, lease, at in samples if lease == dead_fence]
    expired = max(held)  # the last moment the dead holder's lease was seen
    print(
        f"\n{redis_setup.kind}: lease holder killed; its lease was last seen "
        f"{expired - killed_at:.2f} s after the kill; the other process had a token "
        f"{took_over - expired:.2f} s after that (lease_ttl {lease_ttl:g} s); "
        f"{summary['requests']:,} requests, {summary['failed']} failed"
    )
    # The lease was honoured: while it held the dead fence, no second token call.
    assert all(calls == 1 for calls, lease, _ in samples if lease == dead_fence)
    # Taken over once the dead lease ran out, under a lease of its own (stored,
    # still "shared"): not by giving up on the fleet, which takes 2 x lease_ttl
    # of waiting and would have left the process "local".
    assert took_over - expired < lease_ttl
    assert 2 == fake.token_calls  # the dead one's, then the new holder's
    assert 1 == summary["http_fetches"]
    assert "shared" == summary["store"]
    assert 1 == stored  # stored under the new holder's lease
    assert 0 == summary["failed"], summary
    assert 0 == summary["failures"], summary
    assert summary["requests"] > 100
    assert 0 == fake.api_unauthorized


async def test_redis_node_stopped_and_restarted_workers_keep_serving_then_rejoin(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup
) -> None:
    # 3-second tokens, believed for 2 s, refreshed 1 s before expiry: room for
    # a Redis timeout (0.3 s) and a fetch alone even on a loaded machine, where
    # the refresher's own wake-up and the fake's answer each lag. Whether the
    # fleet gives up on Redis in time for a token shorter than redis_timeout
    # is proven exactly by test_fleet.py's CLIENT PAUSE test.
    fake = await fake_provider("cm", lifetime=3.0)
    options: dict[str, Any] = {"seconds": 60, "progress": 0.05, "redis_timeout": 0.3}
    marks: dict[str, float] = {}
    token_key, _, _ = keys_of(fake)
    node = redis_setup.node_for(token_key)  # the one node that holds this credential
    try:
        async with fleet_of(redis_setup, fake) as fleet:
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
            waited = {w.name: w.progress("waits") for w in workers}  # at the first token
            marks["down"] = time.monotonic()
            await anyio.to_thread.run_sync(node.stop)
            # Degraded: each fetches alone, and keeps serving.
            await eventually(lambda: stores() == {"local"}, within=8)
            calls_down = fake.token_calls
            requests = {w.name: w.progress("requests") for w in workers}
            await eventually(lambda: fake.token_calls >= calls_down + 4, within=8)
            await eventually(lambda: serving(requests), within=5)
            marks["up"] = time.monotonic()
            await anyio.to_thread.run_sync(redis_setup.restart_node, node)
            await eventually(lambda: stores() == {"shared"}, within=15)
            hits_back = hits()
            await eventually(lambda: hits() > hits_back, within=8)
            requests = {w.name: w.progress("requests") for w in workers}
            await eventually(lambda: serving(requests), within=5)
            for worker in workers:
                await worker.stop()
            summaries = await fleet.finish(*workers)
    finally:
        if node.process is None:
            await anyio.to_thread.run_sync(redis_setup.restart_node, node)
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
        f"\n{redis_setup.kind}: node stopped for "
        f"{marks['up'] - marks['down']:.1f} s: "
        + "; ".join(transitions)
        + f"; {total(summaries, 'requests'):,} requests, {total(summaries, 'failed')} failed, "
        f"{fake.token_calls} token calls, {fake.api_unauthorized} answered 401"
    )
    for worker, summary in zip(workers, summaries, strict=True):
        assert 0 == summary["failed"], summary
        assert 0 == summary["failures"], summary
        assert "shared" == summary["store"], summary
        # Requests kept their tokens throughout: no request found the served
        # token run out (each refresh, Redis or not, came before its expiry).
        # The client's count is the witness, not the fake's 401s: on a loaded
        # machine the fake, in this process's loop, may read a request sent
        # with 0.2 s to spare after the token it carries expired (the client
        # resends those at once with the token that replaced it).
        assert waited[worker.name] == summary["waits"], summary


async def test_redis_lost_mid_refresh_never_spends_a_refresh_token_twice(
    fake_provider: FakeProviderFactory, single: RedisServer
) -> None:
    # Redis goes away while the lease holder's refresh grant is in flight: the
    # token it brings cannot be stored, but it is good, and its refresh token
    # has been spent; asking again with that one would be refused.
    fake = await fake_provider("payme", lifetime=4.0)
    try:
        async with fleet_of(single, fake) as fleet:
            options: dict[str, Any] = {"seconds": 60, "progress": 0.05, "redis_timeout": 0.3}
            worker = await fleet.start("w", **options)
            await eventually(lambda: fake.tokens_issued >= 1, within=20)
            fake.token_delay = 1.0
            await eventually(lambda: fake.token_calls >= 2, within=5)  # the refresh, slow
            await anyio.to_thread.run_sync(single.stop)
            await eventually(lambda: (worker.progress("refreshes") or 0) >= 1, within=5)
            assert "local" == worker.progress("store")
            calls_while_down = fake.token_calls
            rejected_while_down = list(fake.rejected)
            fake.token_delay = 0.0
            await anyio.to_thread.run_sync(single.start)
            await eventually(lambda: (worker.progress("refreshes") or 0) >= 2, within=8)
            await eventually(lambda: worker.progress("store") == "shared", within=5)
            await worker.stop()
            (summary,) = await fleet.finish(worker)
    finally:
        if single.process is None:
            await anyio.to_thread.run_sync(single.start)
    assert [] == rejected_while_down
    assert 2 == calls_while_down  # the token fetched under the lease was kept, not fetched again
    assert [] == fake.rejected
    assert 0 == summary["failed"], summary
    assert 0 == summary["failures"], summary


async def test_two_processes_racing_on_a_rotating_refresh_token(
    fake_provider: FakeProviderFactory, single: RedisServer
) -> None:
    # Pay-me rotates refresh tokens: one spent twice is refused with invalid_grant.
    # Token calls take 0.3 s, so the two processes' refreshes (due within a
    # few tens of ms of each other) overlap: only an exclusive lease keeps
    # them from spending the same refresh token.
    fake = await fake_provider("payme", lifetime=1.0)
    fake.token_delay = 0.3
    assert fake.rotate_refresh_tokens
    async with fleet_of(single, fake) as fleet:
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
