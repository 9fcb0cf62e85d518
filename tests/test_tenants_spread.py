"""Tenants started together do not refresh together: refresh points spread over half a delay."""

from __future__ import annotations

import asyncio
import collections
import random

import pytest

from aiopay_auth import RefreshPolicy, TokenManager
from aiopay_auth._schedule import REFRESH_SPREAD
from aiopay_auth._step import spread_delay

from .helpers import eventually
from .tenant_endpoint import tenant_api


def test_the_busiest_second_of_10000_tenants_holds_under_0_2_percent() -> None:
    # The production rule, on an injected clock: 10,000 tenants started at
    # 1,000 a second, one-hour tokens, their first refresh points counted
    # per second (as the step computes them: the policy, then the spread).
    policy, rng, n = RefreshPolicy(), random.Random(12), 10_000
    per_second: collections.Counter[int] = collections.Counter()
    for i in range(n):
        issued = i / 1000
        delay = policy.refresh_delay(
            issued_at=issued, expires_at=issued + 3600, now=issued, rng=rng
        )
        delay = spread_delay(delay, spread=REFRESH_SPREAD, rng=rng)
        assert 3600 - 330 - 1650 <= delay <= 3600 - 300  # never later than the policy's
        per_second[int(issued + delay)] += 1
    busiest = max(per_second.values())
    assert busiest / n < 0.002, busiest
    assert 1500 < len(per_second)  # spread over most of half a delay


def test_no_spread_is_the_policys_point_and_draws_nothing() -> None:
    rng = random.Random(1)
    assert 100.0 == spread_delay(100.0, spread=0.0, rng=rng)
    assert random.Random(1).random() == rng.random()  # the single-provider sequence kept


@pytest.mark.anyio
async def test_tenants_started_together_refresh_spread_out() -> None:
    # 100 tenants, 4-second tokens (refreshed 1.8-2 s in by the policy
    # alone), all first fetched within a few tens of ms. Their second
    # token requests reach the server over about a second, at most a
    # quarter of them in any 100 ms; the policy's jitter alone puts
    # them in 2 or 3 such slices.
    async with tenant_api(lifetime=4) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "acme", api=server.api, fetches_per_second=10_000, max_concurrent_fetches=8
        )
        keys = []
        for _ in range(100):
            key, secret = server.client()
            merchants.add(key, server.provider(key, secret))
            keys.append(key)
        await asyncio.gather(*(merchants[k].holder.get() for k in keys))

        def all_refreshed() -> bool:
            asked = collections.Counter(c.client_id for c in server.token_calls)
            return all(asked[k] >= 2 for k in keys)

        await eventually(all_refreshed, within=10)
    by_client: dict[str, list[float]] = collections.defaultdict(list)
    for call in server.token_calls:
        by_client[call.client_id].append(call.arrived)
    start = min(arrivals[0] for arrivals in by_client.values())
    second = [arrivals[1] - start for arrivals in by_client.values() if len(arrivals) > 1]
    assert 100 == len(second)
    slices = collections.Counter(int(t * 10) for t in second)
    print("busiest 100 ms:", max(slices.values()))
    assert max(slices.values()) <= 25, sorted(slices.items())
    assert max(second) - min(second) >= 0.7
