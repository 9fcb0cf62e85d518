"""Tenants in a fleet: RedisFleet shares each merchant's token, one key set per credential."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio

from aiopay_auth import Provider, Tenants, TokenManager
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.providers import generic

from .helpers import eventually
from .redis_server import RedisServer
from .tenant_endpoint import TenantApi, tenant_api


ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.anyio


async def test_two_workers_share_each_merchants_token(client: redis.asyncio.Redis) -> None:
    async with tenant_api() as server, AsyncExitStack() as stack:
        credentials = [server.client() for _ in range(50)]
        sets: list[Tenants] = []
        for _ in range(2):  # two workers of one fleet, each serving every merchant
            # 100 members start at once: their Redis round trips queue on one
            # loop, which a loaded machine may hold past the default 0.5 s;
            # this test is about sharing, not about Redis answering in time.
            fleet = RedisFleet(client, unencrypted=True, redis_timeout=5.0)
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


async def _worker(redis_port: int, base_url: str, credentials: Path) -> dict[str, Any]:
    """Run tests/tenants_worker.py in its own process; its summary."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tenants_worker",
        "--redis-port",
        str(redis_port),
        "--base-url",
        base_url,
        "--credentials",
        str(credentials),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        with anyio.fail_after(120):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    summary: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return summary


async def test_two_processes_of_a_thousand_merchants_fetch_each_token_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Two worker processes, each serving the same 1,000 merchants through one
    # tenant set and a RedisFleet on a real redis-server: the provider sees
    # one token request per merchant in all, each process sends each
    # merchant's request with that merchant's one shared token.
    async with tenant_api() as server:
        credentials = [server.client() for _ in range(1000)]
        path = tmp_path / "merchants.json"
        path.write_text(json.dumps(credentials))
        path.chmod(0o600)
        summaries = await asyncio.gather(
            *(_worker(redis_server.port, str(server.base_url), path) for _ in range(2))
        )
    for summary in summaries:
        assert {"200": 1000} == summary["statuses"]
        assert {"shared": 1000} == summary["stores"]
    assert summaries[0]["tokens"] == summaries[1]["tokens"]
    assert 1000 == len(set(summaries[0]["tokens"].values()))
    accepted = [call.client_id for call in server.token_calls if call.accepted]
    assert sorted(key for key, _ in credentials) == sorted(accepted)  # once each, in all
    assert 1000 == sum(s["http_fetches"] for s in summaries)
    assert 1000 == sum(s["shared_hits"] for s in summaries)
    # Every merchant's API requests carried its own token (the API answers
    # 403 to a token of another merchant on its path).
    assert 2000 == sum(call.client is not None for call in server.api_calls)
    # Each process keeps to the set's cap of 4 token requests in flight.
    assert server.max_in_flight <= 2 * 4


def _merchant(server: TenantApi, key: str, secret: str, ref: str) -> Provider:
    """A merchant's profile; *ref* is a form field that tells its credential apart."""
    provider = server.provider(key, secret)
    return generic.provider(
        name=provider.name,
        token_url=provider.token_url,
        api=server.api,
        client_id=key,
        client_secret=secret,
        extra_fields={"merchant_ref": ref},
    )


@pytest.mark.parametrize("change", ["secret", "credential"])
async def test_a_rotation_in_two_workers_is_fetched_once_and_both_rotations_return(
    client: redis.asyncio.Redis, change: str
) -> None:
    # Workers A and B each rotate merchant-1 and each return a token its own
    # request fetched with the new credentials (a stored entry does not say
    # which secret fetched it); a worker started later with them takes the
    # stored one. A new secret is the same credential (the same key set); a
    # new form field is another one, and the key set follows it.
    async with tenant_api() as server, AsyncExitStack() as stack:
        credentials = [server.client() for _ in range(3)]
        key = credentials[0][0]
        _, new_secret = server.client(key)  # a second secret for merchant-1
        new_ref = "v2" if change == "credential" else "v1"
        managers: list[TokenManager] = []
        sets: list[Tenants] = []
        for _ in range(3):
            fleet = RedisFleet(client, unencrypted=True, redis_timeout=5.0)
            managers.append(await stack.enter_async_context(TokenManager(token_source=fleet.wrap)))
        for tokens in managers[:2]:
            merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
            for merchant, secret in credentials:
                merchants.add(merchant, _merchant(server, merchant, secret, "v1"))
            for merchant, _ in credentials:
                await merchants[merchant].holder.get()
            sets.append(merchants)
        with anyio.fail_after(5):
            rotated_a = await sets[0].rotate(key, _merchant(server, key, new_secret, new_ref))
            rotated_b = await sets[1].rotate(key, _merchant(server, key, new_secret, new_ref))
        late = managers[2].add_tenants("acme", api=server.api)
        late.add(key, _merchant(server, key, new_secret, new_ref))
        with anyio.fail_after(5):
            started = await late[key].holder.get()
    assert started.access_token == rotated_b.access_token
    for rotated in (rotated_a, rotated_b):
        assert new_secret == server.issued_with[rotated.access_token]
    assert 2 == sum(call.secret == new_secret for call in server.token_calls)


async def test_rotate_never_returns_a_token_another_worker_asked_for_with_the_old_secret(
    client: redis.asyncio.Redis,
) -> None:
    # Worker B's token request with the old secret is in flight (the endpoint
    # holds each for 0.5 s) when worker A rotates: A's rotate() waits for its
    # own request with the new secret, not for B's answer from Redis.
    async with tenant_api(token_delay=0.5) as server, AsyncExitStack() as stack:
        key, old_secret = server.client()
        _, new_secret = server.client(key)
        sets: list[Tenants] = []
        for _ in range(2):
            fleet = RedisFleet(client, unencrypted=True, redis_timeout=5.0)
            tokens = await stack.enter_async_context(TokenManager(token_source=fleet.wrap))
            merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
            merchants.add(key, server.provider(key, old_secret))
            sets.append(merchants)
        first = await sets[1][key].holder.get()
        await sets[0][key].holder.get()
        sets[1][key].holder.invalidate(first)  # B asks again, with the old secret
        await eventually(lambda: server.in_flight == 1, within=5)
        with anyio.fail_after(10):
            rotated = await sets[0].rotate(key, server.provider(key, new_secret))
    assert new_secret == server.issued_with[rotated.access_token]


async def test_a_lease_settled_after_a_rotation_stores_only_the_token_fetched_under_it(
    client: redis.asyncio.Redis,
) -> None:
    # Writes are paused while the lease holder stores its token (credential
    # v1): it keeps the lease unsettled and serves its token. While writes
    # stay paused it rotates to another credential (v2, a new form field) and
    # fetches with it alone. When Redis takes writes again, the settle stores
    # the v1 token under the v1 key set, never the v2 token a v1 worker would
    # then serve (nor the v2 token this process serves when it settles).
    async with tenant_api(lifetime=30) as server, AsyncExitStack() as stack:
        key, secret = server.client()
        fleet = RedisFleet(client, unencrypted=True, redis_timeout=0.3)
        tokens = await stack.enter_async_context(TokenManager(token_source=fleet.wrap))
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
        v1, v2 = (_merchant(server, key, secret, ref) for ref in ("v1", "v2"))
        holder = merchants.add(key, v1).holder
        first = await holder.get()

        async def pause_writes() -> None:
            await client.client_pause(10_000, all=False)

        server.before_answer = pause_writes
        try:
            holder.invalidate(first)
            await eventually(lambda: holder.current is not None, within=5)
            assert "local" == holder.health().store
            leased = holder.current
            assert leased is not None
            with anyio.fail_after(5):
                rotated = await merchants.rotate(key, v2)
        finally:
            await client.client_unpause()
        assert rotated is not leased
        # The next contact with Redis: one more rotation (a new secret) while
        # the v2 token is served.
        _, new_secret = server.client(key)
        with anyio.fail_after(5):
            fresh = await merchants.rotate(key, _merchant(server, key, new_secret, "v2"))
        assert "shared" == holder.health().store
    stored = {}
    for profile in (v1, v2):
        token_key, lease, _ = fleet.keys(profile)
        raw = await client.get(token_key)
        assert isinstance(raw, bytes)
        stored[profile] = fleet.read(raw).access_token
        assert not await client.exists(lease)
    assert stored == {v1: leased.access_token, v2: fresh.access_token}
