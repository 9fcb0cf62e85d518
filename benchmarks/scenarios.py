"""What a scenario is, the ones that measure aiopay_auth, and the one request loop.

A scenario opens a client against one fake provider with a pool of a
given size and hands back a :class:`Client`: a ``send()`` coroutine that
makes one request (``GET /api/payments``, body read) and returns the HTTP
status. :func:`drive` runs any client the same way: *concurrency* workers
share a fixed number of requests, under a time bound.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from yarl import URL

from aiopay_auth import Secret, Token, TokenHolder, TokenManager, TokenSource
from aiopay_auth.providers import generic

from .server import Endpoint


Kind = Literal["baseline", "aiopay", "peer"]


@dataclass
class FetchLog:
    """Token fetches seen at the token-source seam (aiopay_auth scenarios)."""

    started: int = 0
    failed: int = 0
    cancelled: int = 0
    published: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each fetched token was published."""


@dataclass
class Client:
    """An open client: how to send one request, and what it can tell about tokens."""

    send: Callable[[], Awaitable[int]]
    fetches: FetchLog | None = None
    holder: TokenHolder | None = None


Opener = Callable[[Endpoint, int], AbstractAsyncContextManager[Client]]


@dataclass(frozen=True)
class Scenario:
    """One way of sending the benchmark's requests.

    Attributes:
        name: Short key, used in tables and JSON.
        label: What it is, for people.
        kind: ``baseline``, ``aiopay`` (ours) or ``peer``.
        server: Which fake provider it talks to (``long`` or ``short`` tokens).
        open: ``open(endpoint, pool_size)``: an async context manager
            yielding the :class:`Client`.
    """

    name: str
    label: str
    kind: Kind
    server: str
    open: Opener


async def fetch_token(session: aiohttp.ClientSession, endpoint: Endpoint) -> tuple[str, float]:
    """One client-credentials token request; returns the token and its lifetime."""
    data = {
        "grant_type": "client_credentials",
        "client_id": endpoint.client_id,
        "client_secret": endpoint.client_secret,
    }
    async with session.post(endpoint.token_url, data=data) as resp:
        resp.raise_for_status()
        body = await resp.json()
    return str(body["access_token"]), float(body["expires_in"])


def aiohttp_pool(limit: int) -> aiohttp.TCPConnector:
    """The connection pool every aiohttp-based scenario uses."""
    return aiohttp.TCPConnector(limit=limit, limit_per_host=0)


def aiohttp_sender(
    session: aiohttp.ClientSession, endpoint: Endpoint
) -> Callable[[], Awaitable[int]]:
    url = URL(endpoint.api_url)

    async def send() -> int:
        async with session.get(url) as resp:
            await resp.read()
            return resp.status

    return send


# --- the baseline -------------------------------------------------------------


@asynccontextmanager
async def open_baseline(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """Raw aiohttp, a token fetched once up front as a static session header."""
    async with aiohttp.ClientSession() as token_session:
        token, _ = await fetch_token(token_session, endpoint)
    headers = {"Authorization": "Bearer " + token}
    async with aiohttp.ClientSession(connector=aiohttp_pool(limit), headers=headers) as http:
        yield Client(aiohttp_sender(http, endpoint))


# --- aiopay_auth ----------------------------------------------------------------


class RecordingSource:
    """A token source that notes when each token is fetched and published.

    It wraps the manager's own HTTP source through the ``token_source``
    seam (where a shared store such as ``RedisFleet.wrap`` would go). The
    refresher publishes a fetched token without awaiting anything in
    between, so the moment ``fetch`` returns is the moment of publication.
    """

    def __init__(self, inner: TokenSource, log: FetchLog) -> None:
        self._inner = inner
        self._log = log

    async def fetch(self, refresh_token: Secret | None) -> Token:
        log = self._log
        log.started += 1
        try:
            token = await self._inner.fetch(refresh_token)
        except asyncio.CancelledError:
            log.cancelled += 1
            raise
        except Exception:
            log.failed += 1
            raise
        log.published.append(time.perf_counter())
        return token


@dataclass(frozen=True)
class Recorded:
    """An open manager with one holder for an endpoint, its fetches noted in *log*."""

    tokens: TokenManager
    holder: TokenHolder
    log: FetchLog


@asynccontextmanager
async def recorded_holder(
    endpoint: Endpoint, *, wait_for_token: bool = True
) -> AsyncIterator[Recorded]:
    """A :class:`TokenManager` with one holder for *endpoint*, behind a :class:`RecordingSource`.

    With *wait_for_token* (the default), the first token has arrived when
    this yields. Every aiopay_auth scenario, whatever its HTTP client,
    opens its holder here.
    """
    log = FetchLog()

    def record(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        return RecordingSource(inner, log)

    async with TokenManager(token_source=record) as tokens:
        holder = tokens.add(
            generic.provider(
                name="bench",
                token_url=endpoint.token_url,
                api=endpoint.api_base,
                client_id=endpoint.client_id,
                client_secret=endpoint.client_secret,
            )
        )
        if wait_for_token:
            await holder.get()
        yield Recorded(tokens, holder, log)


@asynccontextmanager
async def open_aiopay(
    endpoint: Endpoint, limit: int, *, wait_for_token: bool = True
) -> AsyncIterator[Client]:
    """aiopay_auth as documented: ``tokens.session(holder, limit=...)``.

    With *wait_for_token* false, the client is handed out before the first
    token has arrived (a cold start).
    """
    async with (
        recorded_holder(endpoint, wait_for_token=wait_for_token) as rec,
        rec.tokens.session(rec.holder, limit=limit) as http,
    ):
        yield Client(aiohttp_sender(http, endpoint), fetches=rec.log, holder=rec.holder)


OURS = (
    Scenario(
        "baseline",
        "raw aiohttp, static Authorization header (the limit)",
        "baseline",
        "long",
        open_baseline,
    ),
    Scenario(
        "aiopay",
        "aiopay_auth session, day-long tokens (steady state)",
        "aiopay",
        "long",
        open_aiopay,
    ),
    Scenario(
        "aiopay-1s",
        "aiopay_auth session, 1-second tokens (refresh churn)",
        "aiopay",
        "short",
        open_aiopay,
    ),
)


# --- the one request loop ---------------------------------------------------------


@dataclass
class Loop:
    """What one bounded run of :func:`drive` measured."""

    requests: int
    concurrency: int
    completed: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    timed_out: bool = False
    statuses: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0
    ends: array[float] = field(default_factory=lambda: array("d"))
    latencies: array[float] = field(default_factory=lambda: array("d"))

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)


async def drive(
    send: Callable[[], Awaitable[int]],
    *,
    requests: int,
    concurrency: int,
    timeout: float,
    stop_after: float | None = None,
) -> Loop:
    """Send *requests* requests from *concurrency* workers, within *timeout* seconds.

    Each worker takes the next request while any is left, so exactly
    *requests* are sent unless the time bound cuts the run short. Latency
    is measured around ``send()``: the pool wait is included.

    With *stop_after* (seconds, below *timeout*), a looping run for a
    given time: each worker stops once a request of its ends past it, so
    requests in flight then finish (and count) rather than being cut.
    """
    loop = Loop(requests=requests, concurrency=concurrency)
    remaining = requests
    ends, latencies, statuses = loop.ends, loop.latencies, loop.statuses
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = clock()
            try:
                status = str(await send())
            except Exception as exc:
                status = type(exc).__name__
            end = clock()
            statuses[status] += 1
            ends.append(end)
            latencies.append(end - start)
            if end > deadline:  # even if a client swallowed the cancellation
                return

    cpu0 = time.process_time()
    loop.started_at = clock()
    deadline = loop.started_at + (timeout if stop_after is None else stop_after)
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
            for _ in range(min(concurrency, requests)):
                tg.create_task(worker())
    except TimeoutError:
        loop.timed_out = True
    loop.wall = clock() - loop.started_at
    loop.cpu = time.process_time() - cpu0
    loop.completed = len(latencies)
    return loop
