"""``demo --merchants N``: one provider API served for N merchants through tenants.

A fake CM.com provider accepts N merchants' client credentials (chosen
here, ``merchant-1`` … ``merchant-N`` with random secrets, handed to the
fake when it starts) and holds each token request a few milliseconds, as a
real token endpoint takes a while. The demo adds the merchants as tenants
of one set (``tokens.add_tenants``), serves them all from one pooled
session, and its workers send payments for the merchants in turn, each
request naming its merchant with ``middlewares=merchant.middlewares``.

At the end the fake says how many API requests it accepted with each
merchant's token: a merchant whose count differs from the requests the
workers sent for it (and saw succeed) was served with someone else's
token, which fails the run.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TextIO

import aiohttp
import anyio
import attrs

from .._manager import TokenManager
from .._tenants import Tenant
from ..testing import (
    ClientCounters,
    Dialect,
    FakeEndpoint,
    FakeProvider,
    FakeProviderProcess,
    ServerCounters,
    provider_for,
)
from ._config import DemoConfig, ServerMode
from ._progress import interrupt_handler, report_progress
from ._results import MerchantsSummary, Tally
from ._run import REQUEST_TIMEOUT, post_counted


__all__ = [
    "MERCHANT_FETCHES_PER_SECOND",
    "MERCHANT_TOKEN_DELAY",
    "merchant_fake",
    "run_merchants_demo",
]

MERCHANT_TOKEN_DELAY = 0.01
"""Seconds the fake holds each token request, so that requests sent together overlap there."""

MERCHANT_FETCHES_PER_SECOND = 200.0
"""The set's token requests started per second (the cap at once is the default, 4)."""

_DIALECT: Dialect = "cm"


def merchant_fake(
    lifetime: float, clients: Sequence[tuple[str, str]], token_delay: float
) -> FakeProvider:
    """A fake CM.com provider that accepts every merchant of *clients* (picklable)."""
    fake = FakeProvider(_DIALECT, lifetime=lifetime, clients=clients)
    fake.token_delay = token_delay
    return fake


@attrs.frozen
class _Served:
    """The started fake, as the merchants' demo sees it."""

    endpoint: FakeEndpoint
    counters: Callable[[], Awaitable[tuple[ServerCounters, ClientCounters]]]


@contextlib.asynccontextmanager
async def _fake(
    mode: ServerMode, lifetime: float, clients: Sequence[tuple[str, str]]
) -> AsyncIterator[_Served]:
    build = functools.partial(merchant_fake, lifetime, clients, MERCHANT_TOKEN_DELAY)
    if mode == "child":
        async with FakeProviderProcess(
            {_DIALECT: build}, name="aiopay-auth demo merchants"
        ) as child:

            async def remote() -> tuple[ServerCounters, ClientCounters]:
                servers = await child.counters_async()
                per_client = await child.client_counters_async()
                return servers[_DIALECT], per_client[_DIALECT]

            yield _Served(child.endpoints[_DIALECT], remote)
        return
    async with build() as fake:

        async def local() -> tuple[ServerCounters, ClientCounters]:
            return ServerCounters.of(fake), ClientCounters.of(fake)

        yield _Served(FakeEndpoint.of(fake, _DIALECT), local)


class MerchantsRun:
    """What the workers share with the progress line and the Ctrl-C handler."""

    __slots__ = (
        "deadline",
        "interrupted",
        "merchants",
        "next",
        "ok",
        "started",
        "stopping",
        "tally",
        "url",
    )

    def __init__(self, merchants: Sequence[Tenant], url: str) -> None:
        self.merchants = merchants
        self.url = url
        self.ok = [0] * len(merchants)  # 2xx answers, by merchant
        self.next = 0
        self.tally = Tally()
        self.started = time.monotonic()
        self.deadline = self.started
        self.stopping = False
        self.interrupted = False

    def requests(self) -> int:
        """Requests sent so far."""
        return self.tally.requests

    def failed(self) -> int:
        """Requests failed so far."""
        return self.tally.failed

    def fetches(self) -> int:
        """Token requests sent so far, over every merchant."""
        return sum(m.holder.health().fetches for m in self.merchants)


async def _send(http: aiohttp.ClientSession, run: MerchantsRun, worker: int) -> None:
    """Send payments for the merchants in turn until the run ends."""
    merchants, tally, count = run.merchants, run.tally, len(run.merchants)
    sent = 0
    while not run.stopping and time.monotonic() < run.deadline:
        index = run.next
        run.next = (index + 1) % count
        merchant = merchants[index]
        sent += 1
        body = {"reference": f"demo-{worker}-{sent}", "amount": {"currency": "EUR", "value": 1250}}
        if await post_counted(
            tally, http.post(run.url, json=body, middlewares=merchant.middlewares)
        ):
            run.ok[index] += 1


def _credentials(n: int) -> list[tuple[str, str]]:
    """*n* merchants' client ids and random secrets (never printed)."""
    return [(f"merchant-{i}", secrets.token_urlsafe(18)) for i in range(1, n + 1)]


async def run_merchants_demo(
    config: DemoConfig, *, progress: TextIO | None = None, live: bool = False
) -> MerchantsSummary:
    """Run ``demo --merchants N`` and return its summary.

    Args:
        config: What to run; ``config.merchants`` is *N*.
        progress: Where to write progress lines (``None``: nowhere).
        live: Rewrite one line a few times per second (for a terminal).

    Returns:
        The summary; :meth:`MerchantsSummary.exit_status` tells whether it went well.
    """
    credentials = _credentials(config.merchants)
    async with _fake(config.servers, config.lifetime, credentials) as served:
        endpoint = served.endpoint
        async with TokenManager() as tokens:
            shop = tokens.add_tenants(
                "cm", api=endpoint.api_base, fetches_per_second=MERCHANT_FETCHES_PER_SECOND
            )
            merchants = [
                shop.add(key, provider_for(endpoint, client_id=key, client_secret=secret))
                for key, secret in credentials
            ]
            url = str(
                endpoint.api_base.joinpath("paymentmethods", "checkout", "v1", "transactions")
            )
            run = MerchantsRun(merchants, url)
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            with interrupt_handler(run):
                async with tokens.session(shop, limit=config.pool, timeout=timeout) as http:
                    run.started = time.monotonic()
                    run.deadline = run.started + config.duration
                    async with anyio.create_task_group() as helpers:
                        if progress is not None:
                            helpers.start_soon(report_progress, run, progress, live)
                        async with anyio.create_task_group() as fan:
                            for worker in range(config.concurrency):
                                fan.start_soon(_send, http, run, worker)
                        helpers.cancel_scope.cancel()
                    elapsed = time.monotonic() - run.started
            stats = [m.holder.health() for m in merchants]
            await tokens.aclose()
        server, per_client = await served.counters()
    return MerchantsSummary(
        config=config,
        elapsed=elapsed,
        cap=shop.limit.concurrent,
        fetches_per_second=shop.limit.per_second,
        keys=tuple(key for key, _ in credentials),
        ok=tuple(run.ok),
        requests=run.tally.requests,
        failed=run.tally.failed,
        errors=tuple(run.tally.errors.items()),
        token_fetches=sum(s.fetches for s in stats),
        max_wait=max((s.max_wait for s in stats), default=0.0),
        server=server,
        clients=per_client,
        interrupted=run.interrupted,
    )
