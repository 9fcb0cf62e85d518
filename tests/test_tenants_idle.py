"""Idle tenants rest: no refreshing, no token, until their next request.

Against ``tests/tenant_endpoint.py``, which counts token requests per client.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aiopay_auth import ConfigError, RefreshPolicy, TokenManager

from .helpers import eventually
from .tenant_endpoint import tenant_api


pytestmark = pytest.mark.anyio


async def test_an_idle_tenant_rests_and_its_next_requests_share_one_fetch() -> None:
    # One-second tokens, refreshed every 0.25-0.5 s; a tenant with no
    # request for 1 s rests at its next refresh point.
    async with tenant_api(lifetime=1) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "acme", api=server.api, fetches_per_second=1000, idle_after=1.0
        )
        (busy, sb), (quiet, sq) = server.client(), server.client()
        merchants.add(busy, server.provider(busy, sb))
        merchants.add(quiet, server.provider(quiet, sq))
        statuses: list[int] = []
        stop = anyio.Event()
        async with tokens.session(merchants) as http:

            async def get(key: str) -> object:
                async with http.get(server.api, middlewares=merchants[key].middlewares) as r:
                    statuses.append(r.status)
                    return (await r.json())["client"]

            async def keep_busy() -> None:
                while not stop.is_set():
                    await get(busy)
                    await anyio.sleep(0.05)  # 20 requests a second, no faster

            assert quiet == await get(quiet)
            assert busy == await get(busy)
            waits = merchants[busy].holder.health().waits  # its first token's, if any
            worker = asyncio.create_task(keep_busy())
            await eventually(lambda: "idle" == merchants.health()[quiet].state)
            assert merchants[quiet].holder.current is None  # its token is dropped
            assert merchants.health()[quiet].expires_in is None
            rested = len(server.calls_by(quiet))
            # While the busy one refreshes three more times, the quiet one asks nothing.
            busy_calls = len(server.calls_by(busy))
            await eventually(lambda: len(server.calls_by(busy)) >= busy_calls + 3)
            assert rested == len(server.calls_by(quiet))
            assert "idle" != merchants.health()[busy].state

            # Its next requests, ten at once, wait for one token request.
            assert [quiet] * 10 == await asyncio.gather(*(get(quiet) for _ in range(10)))
            assert rested + 1 == len(server.calls_by(quiet))
            assert "idle" != merchants.health()[quiet].state
            # And refreshing resumes.
            await eventually(lambda: len(server.calls_by(quiet)) >= rested + 2)
            stop.set()
            await worker
        # The busy one never rested: no request of it waited for a token since.
        assert waits == merchants[busy].holder.health().waits
    assert {200} == set(statuses)
    assert all(c.accepted for c in server.token_calls)


async def test_idle_after_is_an_hour_by_default_and_checked() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        assert 3600.0 == tokens.add_tenants("a", api=server.api).idle_after
        assert tokens.add_tenants("b", api=server.api, idle_after=None).idle_after is None
        for wrong in (0, -1.0, float("nan"), "60"):
            with pytest.raises(ConfigError, match="idle_after must be"):
                tokens.add_tenants("c", api=server.api, idle_after=wrong)  # type: ignore[arg-type]


async def test_a_tenant_nobody_uses_stops_retrying_refused_credentials() -> None:
    # Refused credentials are retried every 0.2 s; nobody asks for the
    # tenant's token, so after 0.5 s it rests at a retry and asks no more.
    policy = RefreshPolicy(unhealable_retry=0.2)
    async with tenant_api() as server, TokenManager(policy=policy) as tokens:
        merchants = tokens.add_tenants(
            "acme", api=server.api, fetches_per_second=1000, idle_after=0.5
        )
        key, _ = server.client()
        merchants.add(key, server.provider(key, "not-the-secret"))
        await eventually(lambda: "idle" == merchants.health()[key].state)
        refused = len(server.calls_by(key))
        assert 2 <= refused
        await anyio.sleep(1.0)  # five retry periods: none comes
        assert refused == len(server.calls_by(key))
    assert not any(c.accepted for c in server.token_calls)
