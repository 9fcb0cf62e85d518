"""One worker process of a fleet, launched by tests/test_fleet_processes.py.

Run from the repository root::

    python -m tests.fleet_worker --redis-kind single --redis-port 6379 --dialect cm \\
        --token-url http://127.0.0.1:PORT/oauth/token --api http://127.0.0.1:PORT/api \\
        --seconds 30 --concurrency 100 --pool 20

It runs a :class:`~aiopay_auth.TokenManager` whose token source is
:meth:`RedisFleet.wrap <aiopay_auth.fleet.RedisFleet.wrap>`, and a fan of
*concurrency* tasks that loop POST requests to the fake API through
``tokens.session(holder, limit=pool)`` for *seconds* seconds. Repeat
``--token-url`` and ``--api`` for several credentials (one fake provider
each): the loops are dealt out between them. ``--redis-kind`` is
``single``, ``cluster`` (the port of any node) or ``sentinel`` (the
Sentinel's port). The
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
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import anyio
import attrs

from aiopay_auth import Provider, RefreshPolicy, TokenHolder, TokenManager
from aiopay_auth.fleet import RedisFleet, SharedTokenSource
from aiopay_auth.providers import cm, payme
from aiopay_auth.testing import FakeProvider

from .redis_server import client_for, close_client


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
    """The state one process reports on: its credentials' holders, summed."""

    def __init__(self, holders: list[TokenHolder], sources: list[SharedTokenSource]) -> None:
        self.holders = holders
        self.sources = sources
        self.tally = Tally()
        self.started = time.monotonic()
        self.stop = anyio.Event()

    def figures(self) -> dict[str, Any]:
        holders, sources, tally = self.holders, self.sources, self.tally
        stores = {holder.health().store for holder in holders}
        return {
            "pid": os.getpid(),
            "t": round(time.monotonic() - self.started, 3),
            "requests": tally.requests,
            "failed": tally.failed,
            "http_fetches": sum(source.http_fetches for source in sources),
            "shared_hits": sum(source.shared_hits for source in sources),
            "store": stores.pop() if len(stores) == 1 else "mixed",
            "has_token": all(holder.usable() is not None for holder in holders),
            "fetches": sum(holder.health().fetches for holder in holders),
            "failures": sum(holder.health().failures for holder in holders),
            "refreshes": sum(holder.health().refreshes for holder in holders),
            "waits": sum(holder.health().waits for holder in holders),
            "tokens_used": sum(h.health().refreshes + (h.latest is not None) for h in holders),
        }

    def figures_at_end(self) -> dict[str, Any]:
        holders, tally = self.holders, self.tally
        kinds: dict[str, int] = {}
        for holder in holders:
            for kind, count in holder.health().failures_by_kind.items():
                kinds[kind] = kinds.get(kind, 0) + count
        return {
            **self.figures(),
            "statuses": dict(sorted(tally.statuses.items())),
            "errors": tally.errors,
            "failures_by_kind": kinds,
            "recoveries": sum(holder.health().recoveries for holder in holders),
            "max_wait": round(max(holder.health().max_wait for holder in holders), 3),
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
        for holder in worker.holders:
            await holder.get()
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
    if len(args.token_url) != len(args.api):
        msg = "give one --api for each --token-url"
        raise SystemExit(msg)
    providers = [
        attrs.evolve(build_provider(args.dialect, token_url, api), name=f"{args.dialect}-{i}")
        for i, (token_url, api) in enumerate(zip(args.token_url, args.api, strict=True))
    ]
    client = client_for(args.redis_kind, args.redis_port)
    key = os.environ.get(KEY_ENV) or None
    fleet = RedisFleet(
        client,
        encryption_key=key,
        unencrypted=key is None,
        lease_ttl=args.lease_ttl,
        redis_timeout=args.redis_timeout,
    )
    sources: list[SharedTokenSource] = []

    def wrap(holder: TokenHolder, inner: Any) -> SharedTokenSource:
        source = fleet.wrap(holder, inner)
        sources.append(source)
        return source

    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.5, fetch_timeout=args.fetch_timeout)
    urls = [api.rstrip("/") + "/payments" for api in args.api]
    try:
        # Connect before serving, as a service checks its Redis at start-up: a
        # cluster client learns the slot map here, not inside the first bounded
        # fleet operation. (Redis down at start-up is fine: the fleet goes local.)
        with contextlib.suppress(Exception), anyio.move_on_after(10):
            await client.ping()
        async with (
            TokenManager(policy=policy, token_source=wrap) as tokens,
            AsyncExitStack() as stack,
        ):
            holders = [tokens.add(provider) for provider in providers]
            worker = Worker(holders, sources)
            timeout = aiohttp.ClientTimeout(total=30)
            sessions = [
                await stack.enter_async_context(
                    tokens.session(holder, limit=args.pool, timeout=timeout)
                )
                for holder in holders
            ]
            async with anyio.create_task_group() as helpers:
                emit("started", pid=os.getpid())
                helpers.start_soon(first_token, worker)
                helpers.start_soon(stop_after, worker, args.seconds)
                if args.progress:
                    helpers.start_soon(report_progress, worker, args.progress)
                if args.stdin_control:
                    helpers.start_soon(watch_stdin, worker)
                async with anyio.create_task_group() as fan:
                    for i in range(args.concurrency):
                        n = i % len(sessions)
                        fan.start_soon(request_loop, sessions[n], urls[n], worker)
                helpers.cancel_scope.cancel()
            return worker.figures_at_end()
    finally:
        await close_client(client)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fleet_worker", description=__doc__)
    parser.add_argument("--redis-kind", choices=("single", "cluster", "sentinel"), default="single")
    parser.add_argument("--redis-port", required=True, type=int, help="server, node or Sentinel")
    parser.add_argument("--dialect", choices=("cm", "payme"), default="cm")
    parser.add_argument("--token-url", required=True, metavar="URL", action="append")
    parser.add_argument("--api", required=True, metavar="URL", action="append", help="API base")
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
