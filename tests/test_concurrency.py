"""
Invariants under load: one fetch per lifetime, fair and fresh under saturation.

These run real aiohttp clients against the loopback fake: thousands of
concurrent requests, short token lifetimes, small pools.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import pytest

from aiopay_auth import RefreshPolicy, TokenManager
from aiopay_auth.testing import FakeProvider, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .helpers import eventually


pytestmark = pytest.mark.anyio


async def fan(http: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    async def one() -> int:
        async with http.get(url) as resp:
            await resp.read()
            return resp.status

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_cold_start_10000_requests_one_fetch(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder, limit=200) as http:
            statuses = await fan(http, str(fake.api_base / "pay"), 10_000)
    assert [200] * 10_000 == statuses
    assert 1 == fake.token_calls
    assert 1 == holder.stats.fetches
    assert 0 == fake.api_unauthorized


async def test_10000_requests_at_an_expiry_share_one_fetch(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        first = await holder.get()
        # The next refresh is slower than the token's remaining life, so the
        # token expires while the refresh is in flight; the token it brings
        # lives long enough for the whole fan.
        fake.token_delay = 1.5
        fake.lifetime = 60
        await eventually(lambda: holder.usable() is None, within=3)
        assert holder.current is first
        assert 2 == fake.token_calls  # the slow refresh is in flight
        async with tokens.session(holder, limit=200) as http:
            statuses = await fan(http, str(fake.api_base / "pay"), 10_000)
        assert holder.current is not first
    assert [200] * 10_000 == statuses
    assert 2 == fake.token_calls
    assert 0 == fake.api_unauthorized
    assert holder.stats.max_wait > 0.1  # they really waited for the fetch


async def test_1000_simultaneous_401s_one_fetch(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("rfc6749", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        fake.revoke_all()
        # An unbounded pool, so the 1,000 requests really are in flight at
        # once with the revoked token.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            middlewares=[tokens.middleware(holder)],
        ) as http:
            statuses = await fan(http, str(fake.api_base / "pay"), 1000)
    assert [200] * 1000 == statuses
    assert 2 == fake.token_calls
    assert 1 == holder.stats.invalidations
    assert 1000 == fake.api_unauthorized
    assert 1000 == holder.stats.recoveries


async def run_workers(
    fake: FakeProvider, http: aiohttp.ClientSession, *, workers: int, seconds: float
) -> tuple[list[int], list[float], list[int]]:
    counts = [0] * workers
    latencies: list[float] = []
    statuses: list[int] = []
    stop = time.monotonic() + seconds
    url = str(fake.api_base / "pay")

    async def worker(n: int) -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            async with http.get(url) as resp:
                await resp.read()
                statuses.append(resp.status)
            latencies.append(time.monotonic() - started)
            counts[n] += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return counts, latencies, statuses


@pytest.mark.slow
async def test_small_pool_saturated_is_fair_and_never_sends_expired_tokens(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder, limit=10) as http:
            counts, latencies, statuses = await run_workers(fake, http, workers=500, seconds=10)
    # Fresh: not one request was refused, so none carried an expired token.
    assert 0 == fake.api_unauthorized
    assert set(statuses) == {200}
    # Fair: every worker kept getting turns. With aiohttp's own pool some
    # workers starve for the whole run while others cycle.
    assert min(counts) >= 0.5 * statistics.mean(counts)
    # ...and no request waited much longer than its share of the queue.
    median = statistics.median(latencies)
    assert max(latencies) <= 4 * median
    # About one refresh per lifetime: 10 s of 1-second tokens refreshed at
    # half-life is ~20 fetches.
    assert 10 <= fake.token_calls <= 30


async def test_refresh_happens_before_expiry_without_any_request_waiting(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        waits = holder.stats.waits
        async with tokens.session(holder, limit=20) as http:
            counts, _, statuses = await run_workers(fake, http, workers=50, seconds=3)
        assert waits == holder.stats.waits  # steady state: nobody waited
    assert set(statuses) == {200}
    assert sum(counts) > 100
    assert 0 == fake.api_unauthorized
    assert fake.token_calls >= 5  # ~ two per second


async def test_policy_margin_suits_a_token_shorter_than_the_floor(
    fake_provider: FakeProviderFactory,
) -> None:
    # min_margin (5 s) is longer than the token's life (0.4 s): the refresh
    # still lands before expiry, at half-life.
    fake = await fake_provider("cm", lifetime=0.4)
    async with TokenManager(policy=RefreshPolicy(min_margin=5)) as tokens:
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        await eventually(lambda: holder.current is not token, within=2)
        current = holder.current
        assert current is not None
        assert current.issued_at < token.expires_at
