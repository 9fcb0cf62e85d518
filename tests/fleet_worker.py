"""One worker process of a fleet, launched by tests/test_fleet_processes.py.

Run from the repository root::

    python -m tests.fleet_worker --redis redis://127.0.0.1:6379/0 --dialect cm \\
        --token-url http://127.0.0.1:PORT/oauth/token --api http://127.0.0.1:PORT/api \\
        --seconds 30 --concurrency 100 --pool 20

It runs a :class:`~aiopay_auth.TokenManager` whose token source is
:meth:`RedisFleet.wrap <aiopay_auth.fleet.RedisFleet.wrap>`, and a fan of
*concurrency* tasks that loop POST requests to the fake API through
``tokens.session(holder, limit=pool)`` for *seconds* seconds. The
credentials are a :class:`~aiopay_auth.testing.FakeProvider`'s defaults,
so none travels on the command line; a Fernet key, when wanted, comes in
the ``AIOPAY_FLEET_KEY`` environment variable.

On stdout it writes one JSON object per line, never a secret:

* ``{"event": "started", ...}`` once the manager is open and the fan runs;
* ``{"event": "token", "after": s}`` when the first token arrived;
* ``{"event": "progress", ...}`` every ``--progress`` seconds, if asked;
* ``{"event": "summary", ...}`` last: requests, failed, statuses,
  http_fetches, shared_hits, store, failures, ...

With ``--stdin-control`` a line ``stop`` on stdin, or its end, ends the run
early (the summary is still written). Library events go to stderr at
``--log-level``. The exit status is 0 whenever the run completes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import anyio
import redis.asyncio

from aiopay_auth import Provider, RefreshPolicy, TokenHolder, TokenManager
from aiopay_auth.fleet import RedisFleet, SharedTokenSource
from aiopay_auth.providers import cm, payme
from aiopay_auth.testing import FakeProvider


KEY_ENV = "AIOPAY_FLEET_KEY"
"""Environment variable with the Fernet key that encrypts stored tokens (optional)."""

_BODY = b'{"reference":"fleet","amount":{"currency":"EUR","value":1250}}'
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_MAX_ERRORS = 5


def build_provider(dialect: str, token_url: str, api: str) -> Provider:
    """The dialect's real profile, aimed at a fake server, with the fake's default credentials."""
    fake = FakeProvider("payme" if dialect == "payme" else "cm")  # never started
    if dialect == "cm":
        return cm.provider(
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            token_url=token_url,
            api=api,
        )
    return payme.provider(
        environment="development",
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        username=fake.username,
        password=fake.password,
        audience=fake.audience,
        token_url=token_url,
        api=api,
    )


class Tally:
    """What the fan did."""

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def count(self, status: int) -> None:
        self.requests += 1
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if not 200 <= status < 300:
            self.failed += 1

    def fail(self, description: str) -> None:
        self.requests += 1
        self.failed += 1
        if description in self.errors or len(self.errors) < _MAX_ERRORS:
            self.errors[description] = self.errors.get(description, 0) + 1


class Worker:
    """The state one process reports on."""

    def __init__(self, holder: TokenHolder, source: SharedTokenSource) -> None:
        self.holder = holder
        self.source = source
        self.tally = Tally()
        self.started = time.monotonic()
        self.stop = anyio.Event()

    def figures(self) -> dict[str, Any]:
        holder, source, tally = self.holder, self.source, self.tally
        stats = holder.stats
        return {
            "pid": os.getpid(),
            "t": round(time.monotonic() - self.started, 3),
            "requests": tally.requests,
            "failed": tally.failed,
            "http_fetches": source.http_fetches,
            "shared_hits": source.shared_hits,
            "store": holder.health().store,
            "has_token": holder.usable() is not None,
            "fetches": stats.fetches,
            "failures": stats.failures,
            "refreshes": stats.refreshes,
            "tokens_used": stats.refreshes + (holder.latest is not None),
        }

    def figures_at_end(self) -> dict[str, Any]:
        stats, tally = self.holder.stats, self.tally
        return {
            **self.figures(),
            "statuses": dict(sorted(tally.statuses.items())),
            "errors": tally.errors,
            "failures_by_kind": dict(stats.failures_by_kind),
            "recoveries": stats.recoveries,
            "max_wait": round(stats.max_wait, 3),
        }


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line on stdout, at once."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def request_loop(http: aiohttp.ClientSession, url: str, worker: Worker) -> None:
    tally, stop = worker.tally, worker.stop
    while not stop.is_set():
        try:
            async with http.post(url, data=_BODY, headers=_HEADERS) as response:
                await response.read()
                status = response.status
        except Exception as exc:  # every failure is counted and reported
            tally.fail(f"{type(exc).__name__}: {exc}"[:120])
            continue
        tally.count(status)


async def first_token(worker: Worker) -> None:
    try:
        await worker.holder.get()
    except Exception as exc:  # reported, not raised: the summary tells the rest
        emit("token_failed", error=f"{type(exc).__name__}: {exc}"[:200])
    else:
        emit("token", after=round(time.monotonic() - worker.started, 3))


async def report_progress(worker: Worker, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        emit("progress", **worker.figures())


async def watch_stdin(worker: Worker) -> None:
    """End the run on a ``stop`` line or at the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                worker.stop.set()
                return
    finally:
        transport.close()


async def stop_after(worker: Worker, seconds: float) -> None:
    await anyio.sleep(seconds)
    worker.stop.set()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    provider = build_provider(args.dialect, args.token_url, args.api)
    client = redis.asyncio.Redis.from_url(args.redis, socket_connect_timeout=0.5)
    fleet = RedisFleet(
        client,
        encryption_key=os.environ.get(KEY_ENV) or None,
        lease_ttl=args.lease_ttl,
        redis_timeout=args.redis_timeout,
    )
    sources: list[SharedTokenSource] = []

    def wrap(holder: TokenHolder, inner: Any) -> SharedTokenSource:
        source = fleet.wrap(holder, inner)
        sources.append(source)
        return source

    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.5, fetch_timeout=args.fetch_timeout)
    url = args.api.rstrip("/") + "/payments"
    try:
        async with TokenManager(policy=policy, token_source=wrap) as tokens:
            holder = tokens.add(provider)
            worker = Worker(holder, sources[0])
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                tokens.session(holder, limit=args.pool, timeout=timeout) as http,
                anyio.create_task_group() as helpers,
            ):
                emit("started", pid=os.getpid())
                helpers.start_soon(first_token, worker)
                helpers.start_soon(stop_after, worker, args.seconds)
                if args.progress:
                    helpers.start_soon(report_progress, worker, args.progress)
                if args.stdin_control:
                    helpers.start_soon(watch_stdin, worker)
                async with anyio.create_task_group() as fan:
                    for _ in range(args.concurrency):
                        fan.start_soon(request_loop, http, url, worker)
                helpers.cancel_scope.cancel()
            return worker.figures_at_end()
    finally:
        await client.aclose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fleet_worker", description=__doc__)
    parser.add_argument("--redis", required=True, metavar="URL", help="the fleet's Redis")
    parser.add_argument("--dialect", choices=("cm", "payme"), default="cm")
    parser.add_argument("--token-url", required=True, metavar="URL")
    parser.add_argument("--api", required=True, metavar="URL", help="the fake API's base")
    parser.add_argument("--seconds", type=float, default=10.0, help="longest run")
    parser.add_argument("--concurrency", type=int, default=20, help="request loops")
    parser.add_argument("--pool", type=int, default=10, help="connections to the API")
    parser.add_argument("--lease-ttl", type=float, default=15.0, help="RedisFleet lease_ttl")
    parser.add_argument("--redis-timeout", type=float, default=0.5, help="RedisFleet bound")
    parser.add_argument("--fetch-timeout", type=float, default=10.0, help="token request bound")
    parser.add_argument("--progress", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--stdin-control", action="store_true", help="stop on 'stop' or EOF")
    parser.add_argument("--log-level", default="WARNING", help="library events on stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"worker {os.getpid()} %(levelname)s %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        summary = asyncio.run(run(args))
        emit("summary", **summary)
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
