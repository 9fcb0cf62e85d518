"""One task refreshes a whole set of tenants: cost, and who goes first.

Against ``tests/tenant_endpoint.py`` (written from RFC 6749/6750), which
records which client asked for each token and when.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import anyio
import pytest

from aiopay_auth import RefreshPolicy, Tenants, TokenManager

from .helpers import eventually
from .tenant_endpoint import TenantApi, tenant_api


pytestmark = pytest.mark.anyio


def sdk_tasks() -> list[str]:
    """Names of the SDK's live refresher and fetch tasks."""
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and t.get_name().startswith(("aiopay_auth refresher", "aiopay_auth fetch"))
    )


def add(merchants: Tenants, server: TenantApi, n: int) -> list[str]:
    """Add *n* new clients of *server* as tenants; return their keys."""
    keys = []
    for _ in range(n):
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        keys.append(key)
    return keys


async def test_one_task_refreshes_the_whole_set() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=10_000)
        keys = add(merchants, server, 100)
        await asyncio.gather(*(merchants[k].holder.get() for k in keys))
        await eventually(lambda: 0 == merchants._schedule.running)
        assert ["aiopay_auth refresher acme"] == sdk_tasks()  # not one per tenant
    assert sorted(keys) == sorted(c.client_id for c in server.token_calls)


async def test_a_waiting_request_goes_ahead_of_a_cold_start() -> None:
    # 300 tenants at 20 token requests a second: 15 s of cold start, far
    # past the 3-second wait bound. A request for the last one added may
    # not wait behind the other 299.
    policy = RefreshPolicy(wait_timeout=3)
    async with tenant_api() as server, TokenManager(policy=policy) as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=20)
        keys = add(merchants, server, 300)
        last = merchants[keys[-1]]
        async with tokens.session(merchants) as http:
            started = time.monotonic()
            async with http.get(server.api, middlewares=last.middlewares) as resp:
                assert {"client": keys[-1]} == await resp.json()
            waited = time.monotonic() - started
    asked = [c.client_id for c in server.token_calls]
    # Behind at most the requests already started (4 in flight, spaced 50 ms).
    assert asked.index(keys[-1]) <= 8, asked[:10]
    assert waited < 3


async def test_a_refused_token_goes_ahead_of_queued_first_tokens() -> None:
    policy = RefreshPolicy(wait_timeout=3)
    async with tenant_api() as server, TokenManager(policy=policy) as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=20)
        (first,) = add(merchants, server, 1)
        tenant = merchants[first]
        async with tokens.session(merchants) as http:
            async with http.get(server.api, middlewares=tenant.middlewares) as resp:
                assert 200 == resp.status
            add(merchants, server, 300)  # 15 s of first tokens queued
            server.revoke(first)
            calls = len(server.token_calls)
            async with http.get(server.api, middlewares=tenant.middlewares) as resp:
                assert {"client": first} == await resp.json()  # refused, resent with a new token
    assert 1 == tenant.holder.health().recoveries
    asked = [c.client_id for c in server.token_calls[calls:]]
    assert asked.index(first) <= 8, asked[:10]


async def test_memory_per_tenant_stays_under_8_kib() -> None:
    # The SDK's own objects per tenant holding a token, measured with
    # tracemalloc; the server's allocations (same process) are left out.
    n = 200
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "acme", api=server.api, fetches_per_second=100_000, max_concurrent_fetches=16
        )
        await merchants[add(merchants, server, 1)[0]].holder.get()  # warm every code path
        credentials = [server.client() for _ in range(n)]
        profiles = [server.provider(key, secret) for key, secret in credentials]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for (key, _), profile in zip(credentials, profiles, strict=True):
                merchants.add(key, profile)
            await asyncio.gather(*(merchants[k].holder.get() for k, _ in credentials))
            with anyio.fail_after(5):
                await eventually(lambda: 0 == merchants._schedule.running)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    ours = [tracemalloc.Filter(inclusive=False, filename_pattern="*tenant_endpoint.py")]
    ours.append(tracemalloc.Filter(inclusive=False, filename_pattern="*/aiohttp/web*"))
    grown = sum(
        s.size_diff
        for s in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    per_tenant = grown / n
    print(f"memory per active tenant: {per_tenant:.0f} B")
    assert per_tenant <= 8 * 1024, per_tenant


async def test_memory_per_resting_tenant_stays_under_4_kib() -> None:
    # A tenant that rests (no request for idle_after) holds no token and no
    # event: the SDK's own objects per resting tenant, with tracemalloc.
    n = 200
    async with tenant_api(lifetime=1) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "acme",
            api=server.api,
            fetches_per_second=100_000,
            max_concurrent_fetches=16,
            idle_after=0.2,
        )
        (first,) = add(merchants, server, 1)
        await merchants[first].holder.get()  # warm every code path, resting too
        await eventually(lambda: "idle" == merchants.health()[first].state)
        credentials = [server.client() for _ in range(n)]
        profiles = [server.provider(key, secret) for key, secret in credentials]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for (key, _), profile in zip(credentials, profiles, strict=True):
                merchants.add(key, profile)
            await eventually(
                lambda: all("idle" == h.state for h in merchants.health().values()), within=10
            )
            assert all(merchants[k].holder.current is None for k, _ in credentials)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    assert {k for k, _ in credentials} <= {c.client_id for c in server.token_calls}
    ours = [tracemalloc.Filter(inclusive=False, filename_pattern="*tenant_endpoint.py")]
    ours.append(tracemalloc.Filter(inclusive=False, filename_pattern="*/aiohttp/web*"))
    grown = sum(
        s.size_diff
        for s in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    per_tenant = grown / n
    print(f"memory per resting tenant: {per_tenant:.0f} B")
    assert per_tenant <= 4 * 1024, per_tenant
