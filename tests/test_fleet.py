"""Fleet-wide token sharing through a real redis-server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
import redis.asyncio
from cryptography.fernet import Fernet
from redis.crc import key_slot

from aiopay_auth import ConfigError, RefreshPolicy, TokenHolder, TokenManager
from aiopay_auth.fleet import RedisFleet, SharedTokenSource, fleet_key
from aiopay_auth.providers import cm
from aiopay_auth.testing import FakeProvider, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .conftest import RedisSetup
from .helpers import eventually
from .redis_server import RedisClusterServers, RedisServer, client_for, close_client


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

    async def worker(
        self, fake: FakeProvider, policy: RefreshPolicy = POLICY, **options: object
    ) -> TokenHolder:
        tokens = await self.stack.enter_async_context(
            TokenManager(policy=policy, token_source=self.wrap)
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


async def test_a_redis_that_answers_nothing_never_outlasts_the_served_token(
    fake_provider: FakeProviderFactory, redis_server: RedisServer, client: redis.asyncio.Redis
) -> None:
    # Each Redis operation may take 10 s, far longer than the token lives.
    # While Redis answers nothing (CLIENT PAUSE), the refresh must still
    # give up on it in time to fetch alone before the served token expires.
    fake = await fake_provider("cm", lifetime=1.5)
    member = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        async with AsyncExitStack() as stack:
            fleet = Fleet(stack, RedisFleet(member, unencrypted=True, redis_timeout=10.0))
            holder = await fleet.worker(fake)
            await holder.get()
            served = holder.current
            assert served is not None
            await client.client_pause(2500, all=True)
            try:
                await eventually(lambda: holder.latest is not served, within=5)
                fresh = holder.latest
                assert fresh is not None
                # Its token request went out before the served token expired.
                assert fresh.issued_at < served.expires_at
                assert "local" == holder.health().store
                assert 2 == fake.token_calls
            finally:
                await client.client_unpause()
            await eventually(lambda: holder.health().store == "shared", within=5)
        assert 0 == holder.stats.failures
    finally:
        await member.aclose()


# --- Redis Cluster, Sentinel, and what any set-up must survive ----------------------


@pytest.fixture(name="clients")
async def _clients(redis_setup: RedisSetup) -> AsyncIterator[Callable[[], Any]]:
    """Makes clients of the set-up under test, as separate processes would; closes them."""
    made: list[Any] = []

    def make() -> Any:
        client = client_for(redis_setup.kind, redis_setup.client_port)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            await close_client(client)


def test_every_key_of_a_credential_shares_one_cluster_slot() -> None:
    fleet = RedisFleet(redis.asyncio.Redis(), unencrypted=True)
    keys = fleet.keys(cm.provider(client_id="merchant", client_secret="s3cret"))
    with pytest.raises(ConfigError, match="prefix"):
        RedisFleet(redis.asyncio.Redis(), unencrypted=True, prefix="a{b}")
    assert len({key_slot(key.encode()) for key in keys}) == 1


async def test_fleet_shares_one_token_per_cycle_on_each_setup(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup, clients: Callable[[], Any]
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    key = Fernet.generate_key()
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(clients(), encryption_key=key))
        holders = [await fleet.worker(fake) for _ in range(3)]
        for holder in holders:
            await holder.get()
        started = time.monotonic()
        await eventually(lambda: fake.tokens_issued >= 5, within=15)
        elapsed = time.monotonic() - started
        stores = {h.health().store for h in holders}
        hits = sum(s.shared_hits for s in fleet.sources)
    # One token per half-life for the three, where alone each would fetch its own.
    assert {"shared"} == stores, redis_setup.kind
    assert hits >= 6
    assert fake.token_calls == sum(s.http_fetches for s in fleet.sources)
    assert fake.token_calls <= 2 * (elapsed / 0.5) + 2
    assert 0 == sum(h.stats.failures for h in holders)


async def test_a_redis_error_the_fleet_does_not_know_means_fetching_locally(
    fake_provider: FakeProviderFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A cluster client aimed at a server without cluster mode fails with
    # RedisClusterException, which is no RedisError: still Redis trouble.
    import redis.asyncio.cluster

    fake = await fake_provider("cm", lifetime=1.0)
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=redis_server.port)
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    try:
        async with AsyncExitStack() as stack:
            fleet = Fleet(stack, RedisFleet(client, unencrypted=True, redis_timeout=1.0))
            holder = await fleet.worker(fake)
            with anyio.fail_after(10):
                await holder.get()
            await eventually(lambda: fake.token_calls >= 3, within=10)  # refreshes go on
            assert "local" == holder.health().store
            assert holder.usable() is not None
    finally:
        await client.aclose()
    degraded = [r for r in caplog.records if "fleet_degraded" in r.getMessage()]
    assert len(degraded) == 1  # logged once, not at every refresh
    assert "RedisClusterException" in degraded[0].getMessage()
    assert 0 == holder.stats.failures


def _entry(**fields: object) -> bytes:
    now = time.time()
    entry: dict[str, object] = {
        "access_token": "planted-token",
        "token_type": "Bearer",
        "issued_wall": now,
        "expires_wall": now + 30,
        "refresh_token": None,
        "scope": None,
    }
    entry.update(fields)
    return json.dumps(entry).encode()


POISON: dict[str, Callable[[], bytes]] = {
    "expires-wall-text": lambda: _entry(expires_wall="soon"),
    "numeric-access-token": lambda: _entry(access_token=12345),
    "crlf-token-ten-years": lambda: _entry(
        access_token="a\r\nX-Injected: 1", expires_wall=time.time() + 10 * 365 * 86400
    ),
    "not-bearer": lambda: _entry(token_type="mac"),
    "refresh-token-number": lambda: _entry(refresh_token=7),
    "list-not-object": lambda: b"[1, 2]",
    "not-json": lambda: b"\\xff{",
    "huge-integer-time": lambda: _entry(expires_wall=10**400),
    "issued-in-the-future": lambda: _entry(
        issued_wall=time.time() + 60, expires_wall=time.time() + 90
    ),
    "older-than-its-lifetime": lambda: _entry(
        issued_wall=time.time() - 60, expires_wall=time.time() - 30
    ),
    "zero-lifetime": lambda: _entry(expires_wall=time.time()),
}


@pytest.mark.parametrize("poison", list(POISON))
async def test_a_bad_stored_entry_is_absent_fetched_over_and_overwritten(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis, poison: str
) -> None:
    fake = await fake_provider("cm", lifetime=30)
    fleet = RedisFleet(client, unencrypted=True)
    token_key, _, _ = fleet.keys(provider_for(fake))
    await client.set(token_key, POISON[poison]())  # no TTL: it would stay forever
    async with AsyncExitStack() as stack:
        members = Fleet(stack, fleet)
        holders = [await members.worker(fake) for _ in range(3)]
        with anyio.fail_after(10):
            tokens = [await holder.get() for holder in holders]
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{provider_for(fake).api[0]}/payments", headers={"Authorization": tokens[0].header}
            ) as response,
        ):
            assert response.status != 401
    assert 1 == fake.token_calls  # the lease holder's; the others took its token
    assert {t.access_token for t in tokens} <= fake.issued_tokens
    assert len({t.access_token for t in tokens}) == 1
    assert all(t.lifetime <= 30 for t in tokens)
    assert 0 < await client.pttl(token_key) <= 30_000  # overwritten, with a TTL
    assert 0 == sum(h.stats.failures for h in holders)
    assert sum(s.refused_entries for s in members.sources) >= 1


def test_stored_times_are_checked_against_this_hosts_clock() -> None:
    now = 1_000_000.0
    fleet = RedisFleet(redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: now)

    def stored(issued: float, lifetime: float) -> bytes:
        return _entry(issued_wall=issued, expires_wall=issued + lifetime)

    # A writer 0.5 s ahead: within the 1 s tolerance; its expiry is kept, never moved later.
    ahead = fleet.decode(stored(now + 0.5, 10))
    assert ahead is not None
    token = ahead.to_token(clock=100.0, wall=now)
    assert token.expires_at == pytest.approx(100.0 + 10.5)
    assert token.issued_at == pytest.approx(100.0)
    # Beyond the tolerance, or expired on this host's clock: absent.
    assert fleet.decode(stored(now + 1.5, 10)) is None
    assert fleet.decode(stored(now - 10, 10)) is None
    assert fleet.decode(stored(now - 9, 10)) is not None
    # A 10-year expiry is cut to the one-day cap of a provider's answer.
    capped = fleet.decode(stored(now, 10 * 365 * 86400))
    assert capped is not None
    assert capped.expires_wall == now + 86400
    strict = RedisFleet(
        redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: now, clock_tolerance=0
    )
    assert strict.decode(stored(now + 0.1, 10)) is None


async def test_a_host_whose_clock_is_far_ahead_is_not_believed(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    fake = await fake_provider("cm", lifetime=30)
    async with AsyncExitStack() as stack:
        ahead = Fleet(
            stack, RedisFleet(client, unencrypted=True, wall_clock=lambda: time.time() + 120)
        )
        on_time = Fleet(stack, RedisFleet(client, unencrypted=True))
        first = await (await ahead.worker(fake)).get()
        second = await (await on_time.worker(fake)).get()
    # The entry says "issued two minutes from now": the on-time host fetched its own.
    assert 2 == fake.token_calls
    assert first.access_token != second.access_token
    assert on_time.sources[0].refused_entries >= 1


def test_running_without_encryption_is_an_explicit_choice() -> None:
    client = redis.asyncio.Redis()
    with pytest.raises(ConfigError, match="unencrypted=True"):
        RedisFleet(client)
    with pytest.raises(ConfigError, match="not both"):
        RedisFleet(client, encryption_key=Fernet.generate_key(), unencrypted=True)
    assert RedisFleet(client, unencrypted=True).prefix == "aiopay_auth"


async def test_an_exclusive_lease_one_token_call_for_a_cold_fleet(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # The token call takes 0.5 s: every member asks within it. Only the lease
    # holder may ask the provider; a lease two members can hold costs two calls.
    fake = await fake_provider("cm", lifetime=30)
    fake.token_delay = 0.5
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True))
        holders = [await fleet.worker(fake) for _ in range(4)]
        with anyio.fail_after(10):
            tokens = [await holder.get() for holder in holders]
    assert 1 == fake.token_calls
    assert len({t.access_token for t in tokens}) == 1
    assert 3 == sum(s.shared_hits for s in fleet.sources)


async def test_racing_refreshes_on_a_rotating_refresh_token_spend_each_once(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # Slow token calls make the members' refreshes overlap: without an
    # exclusive lease two of them would spend the same refresh token.
    fake = await fake_provider("payme", lifetime=1.0)
    fake.token_delay = 0.3
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True))
        holders = [await fleet.worker(fake) for _ in range(3)]
        for holder in holders:
            await holder.get()
        await eventually(lambda: fake.tokens_issued >= 6, within=20)
    assert [] == fake.rejected  # no invalid_grant: no refresh token spent twice
    assert 0 == sum(h.stats.failures for h in holders)
    assert fake.token_calls == fake.tokens_issued


async def test_waiting_members_are_quiet_on_redis(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup, clients: Callable[[], Any]
) -> None:
    # One member holds the lease through a slow token call; six wait on it.
    poll, delay, waiting = 0.05, 2.0, 6
    fake = await fake_provider("cm", lifetime=30)
    fake.token_delay = delay
    async with AsyncExitStack() as stack:
        members = []
        token_key, _, _ = RedisFleet.keys(  # the same for any fleet with the default prefix
            RedisFleet(redis.asyncio.Redis(), unencrypted=True), provider_for(fake)
        )
        for _ in range(waiting + 1):
            client = clients()
            await client.exists(token_key)  # its pooled connection, as a running process has
            members.append(Fleet(stack, RedisFleet(client, unencrypted=True, poll_interval=poll)))
        before = await anyio.to_thread.run_sync(redis_setup.stats)
        started = time.monotonic()
        slow = RefreshPolicy(fetch_timeout=delay + 5)
        holders = [await member.worker(fake, slow) for member in members]
        with anyio.fail_after(delay + 10):
            for holder in holders:
                await holder.get()
        elapsed = time.monotonic() - started
        after = await anyio.to_thread.run_sync(redis_setup.stats)
    connections = after["total_connections_received"] - before["total_connections_received"]
    commands = sum(after[k] - before[k] for k in ("client_commands", "subscribes"))
    per_member = elapsed * waiting
    print(
        f"\n{redis_setup.kind}: {waiting} members waited {elapsed:.2f} s on a {delay:g} s token "
        f"call: {connections} connections ({connections / per_member:.2f} per member per s), "
        f"{commands} commands ({commands / per_member:.1f} per member per s)"
    )
    assert 1 == fake.token_calls
    # Each waiting member: one subscription (one connection), then per poll one
    # GET and one SET NX; a few more to start and end the wait. The holder: a
    # handful. The stats reads themselves: two connections per node.
    nodes = len(getattr(redis_setup, "nodes", [None]))
    polls = elapsed / poll + 1
    assert connections <= waiting * 1 + 2 + 4 * nodes
    assert commands <= waiting * (2 * polls + 6) + 10


async def test_the_request_hot_path_never_touches_redis(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup, clients: Callable[[], Any]
) -> None:
    fake = await fake_provider("cm", lifetime=30)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(clients(), unencrypted=True))
        tokens = await stack.enter_async_context(
            TokenManager(policy=POLICY, token_source=fleet.wrap)
        )
        holder = tokens.add(provider_for(fake))
        await holder.get()
        http = await stack.enter_async_context(tokens.session(holder, limit=20))
        url = f"{provider_for(fake).api[0]}/payments"
        before = await anyio.to_thread.run_sync(redis_setup.stats)

        async def loop() -> None:
            for _ in range(100):
                async with http.post(url, json={}) as response:
                    assert response.status == 200

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(loop)
        after = await anyio.to_thread.run_sync(redis_setup.stats)
    commands = after["client_commands"] - before["client_commands"]
    assert 2000 == fake.api_calls
    assert 1 == fake.token_calls
    assert 0 == commands  # 2,000 requests, 0 Redis commands


async def test_a_redis_node_stopped_and_restarted_members_fetch_locally_then_rejoin(
    fake_provider: FakeProviderFactory, redis_setup: RedisSetup, clients: Callable[[], Any]
) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(clients(), unencrypted=True, redis_timeout=0.3))
        holders = [await fleet.worker(fake) for _ in range(2)]
        for holder in holders:
            await holder.get()
        token_key, _, _ = fleet.fleet.keys(holders[0].provider)
        node = redis_setup.node_for(token_key)
        await anyio.to_thread.run_sync(node.stop)
        try:
            await eventually(lambda: {h.health().store for h in holders} == {"local"}, within=8)
            calls_down = fake.token_calls
            await eventually(lambda: fake.token_calls >= calls_down + 4, within=8)
            assert all(h.usable() is not None for h in holders)
        finally:
            await anyio.to_thread.run_sync(redis_setup.restart_node, node)
        await eventually(lambda: {h.health().store for h in holders} == {"shared"}, within=15)
        hits = sum(s.shared_hits for s in fleet.sources)
        await eventually(lambda: sum(s.shared_hits for s in fleet.sources) > hits, within=8)
    assert 0 == sum(h.stats.failures for h in holders)
    assert 0 == fake.api_unauthorized


@pytest.fixture(name="cluster_without_sharded_pubsub", scope="module")
def _cluster_without_sharded_pubsub() -> Iterator[RedisClusterServers]:
    """A Redis Cluster whose nodes lack SPUBLISH and SSUBSCRIBE, as before Redis 7.0."""
    unsharded = ("--rename-command", "SPUBLISH", "", "--rename-command", "SSUBSCRIBE", "")
    cluster = RedisClusterServers(extra=unsharded)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()


async def test_a_cluster_without_sharded_pubsub_gets_plain_pubsub(
    fake_provider: FakeProviderFactory, cluster_without_sharded_pubsub: RedisClusterServers
) -> None:
    # Waiters subscribe with plain SUBSCRIBE, and the store script announces
    # with PUBLISH: the fleet stays shared, announcements still arrive.
    cluster = cluster_without_sharded_pubsub
    fake = await fake_provider("cm", lifetime=30)
    fake.token_delay = 0.5
    client = client_for("cluster", cluster.client_port)
    try:
        before = await anyio.to_thread.run_sync(cluster.stats)
        async with AsyncExitStack() as stack:
            fleet = Fleet(stack, RedisFleet(client, unencrypted=True, poll_interval=10.0))
            holders = [await fleet.worker(fake) for _ in range(3)]
            started = time.monotonic()
            with anyio.fail_after(8):
                tokens = [await holder.get() for holder in holders]
            elapsed = time.monotonic() - started
            stores = {h.health().store for h in holders}
        after = await anyio.to_thread.run_sync(cluster.stats)
    finally:
        await close_client(client)
    assert {"shared"} == stores
    assert 1 == fake.token_calls
    assert len({t.access_token for t in tokens}) == 1
    assert after["subscribes"] - before["subscribes"] >= 2  # the two waiters
    # A 10 s poll interval: the waiters woke on the announcement, not on a poll.
    assert elapsed < 5.0
