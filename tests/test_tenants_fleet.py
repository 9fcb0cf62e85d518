"""Tenants in a fleet: RedisFleet shares each merchant's token, one key set per credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import redis.asyncio

from aiopay_auth import Tenants, TokenManager
from aiopay_auth.fleet import RedisFleet

from .redis_server import RedisServer
from .tenant_endpoint import tenant_api


pytestmark = pytest.mark.anyio


@pytest.fixture(name="client")
async def _client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


async def test_two_workers_share_each_merchants_token(client: redis.asyncio.Redis) -> None:
    async with tenant_api() as server, AsyncExitStack() as stack:
        credentials = [server.client() for _ in range(50)]
        sets: list[Tenants] = []
        for _ in range(2):  # two workers of one fleet, each serving every merchant
            fleet = RedisFleet(client, unencrypted=True)
            tokens = await stack.enter_async_context(TokenManager(token_source=fleet.wrap))
            merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
            for key, secret in credentials:
                merchants.add(key, server.provider(key, secret))
            sets.append(merchants)
        held = [
            {key: (await merchants[key].holder.get()).access_token for key, _ in credentials}
            for merchants in sets
        ]
        assert {"shared"} == {h.store for merchants in sets for h in merchants.health().values()}
    assert held[0] == held[1]  # both workers hold each merchant's one token
    assert sorted(k for k, _ in credentials) == sorted(c.client_id for c in server.token_calls)
