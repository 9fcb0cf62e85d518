"""Fleet-wide token sharing through a real redis-server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import redis.asyncio
from cryptography.fernet import Fernet

from aiopay_auth import ConfigError, RefreshPolicy, TokenHolder, TokenManager
from aiopay_auth.fleet import RedisFleet, SharedTokenSource, fleet_key
from aiopay_auth.testing import FakeProvider, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .helpers import eventually
from .redis_server import RedisServer


pytestmark = pytest.mark.anyio

POLICY = RefreshPolicy(backoff_initial=0.05, backoff_max=0.2, fetch_timeout=2)


@pytest.fixture(name="client")
async def _client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


class Fleet:
    """Several managers sharing one Redis: stand-ins for worker processes."""

    def __init__(self, stack: AsyncExitStack, fleet: RedisFleet) -> None:
        self.stack = stack
        self.fleet = fleet
        self.sources: list[SharedTokenSource] = []

    def wrap(self, holder: TokenHolder, inner: object) -> SharedTokenSource:
        source = self.fleet.wrap(holder, inner)  # type: ignore[arg-type]
        self.sources.append(source)
        return source

    async def worker(self, fake: FakeProvider, **options: object) -> TokenHolder:
        tokens = await self.stack.enter_async_context(
            TokenManager(policy=POLICY, token_source=self.wrap)
        )
        return tokens.add(provider_for(fake, **options))


async def test_two_workers_fetch_one_token_per_lifetime(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True))
        holders = [await fleet.worker(fake) for _ in range(3)]
        for holder in holders:
            await holder.get()
        started = time.monotonic()
        await eventually(lambda: fake.tokens_issued >= 6, within=10)
        elapsed = time.monotonic() - started
        # Three workers, one token per ~half-life between them: about two a
        # second, where fetching alone would be six.
        assert elapsed > 2.0
        assert sum(s.http_fetches for s in fleet.sources) == fake.token_calls
        assert sum(s.shared_hits for s in fleet.sources) >= 8
        assert {"shared"} == {h.health().store for h in holders}
        tokens = {h.current.access_token for h in holders if h.current is not None}
        assert len(tokens) <= 2  # all on the fleet's newest token, or the one before


async def test_keys_hold_no_secret_and_tokens_are_encrypted(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    fake = await fake_provider("payme", lifetime=30)
    key = Fernet.generate_key()
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, encryption_key=key))
        holder = await fleet.worker(fake)
        token = await holder.get()
        assert token.refresh_token is not None
        keys = [k.decode() if isinstance(k, bytes) else k for k in await client.keys("*")]
        assert keys == [f"aiopay_auth:{{{fleet_key(holder.provider)}}}:token"]
        stored = await client.get(keys[0])
        ttl = await client.pttl(keys[0])
    assert isinstance(stored, bytes)
    for secret in (fake.client_secret, fake.password, token.access_token):
        assert secret not in "".join(keys)
        assert secret.encode() not in stored
    assert token.refresh_token.reveal().encode() not in stored
    assert 0 < ttl <= 30_000
    # Another key cannot read it: treated as absent, not as a token.
    assert RedisFleet(client, encryption_key=Fernet.generate_key()).decode(stored) is None
    assert RedisFleet(client, encryption_key=key).decode(stored) is not None


async def test_bad_configuration_is_refused(client: redis.asyncio.Redis) -> None:
    with pytest.raises(ConfigError, match="Fernet key"):
        RedisFleet(client, encryption_key="not a key")
    with pytest.raises(ConfigError, match="positive"):
        RedisFleet(client, unencrypted=True, lease_ttl=0)


async def test_rotating_refresh_token_is_never_spent_twice(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # Pay-me rotates refresh tokens: a spent one is refused with invalid_grant.
    fake = await fake_provider("payme", lifetime=0.8)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True))
        holders = [await fleet.worker(fake) for _ in range(3)]
        for holder in holders:
            await holder.get()
        await eventually(lambda: fake.tokens_issued >= 8, within=15)
    assert [] == fake.rejected  # no invalid_grant: no refresh token reused
    assert 0 == sum(h.stats.failures for h in holders)
    assert len(fake.issued_refresh_tokens) == fake.tokens_issued


async def test_redis_down_falls_back_then_rejoins(
    fake_provider: FakeProviderFactory, redis_server: RedisServer
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_connect_timeout=0.2)
    try:
        async with AsyncExitStack() as stack:
            fleet = Fleet(stack, RedisFleet(client, unencrypted=True, redis_timeout=0.3))
            holders = [await fleet.worker(fake) for _ in range(2)]
            for holder in holders:
                await holder.get()
            redis_server.stop()
            # Degraded: each fetches alone, and requests never wait on Redis.
            await eventually(lambda: {h.health().store for h in holders} == {"local"}, within=5)
            for holder in holders:
                assert holder.usable() is not None
            calls_down = fake.token_calls
            await eventually(lambda: fake.token_calls >= calls_down + 4, within=5)
            assert all(h.usable() is not None for h in holders)
            redis_server.start()
            await eventually(lambda: {h.health().store for h in holders} == {"shared"}, within=8)
            hits = sum(s.shared_hits for s in fleet.sources)
            await eventually(lambda: sum(s.shared_hits for s in fleet.sources) > hits, within=5)
        assert 0 == sum(h.stats.failures for h in holders)
        assert 0 == fake.api_unauthorized
    finally:
        await client.aclose()
