"""Fleet-wide token sharing through a real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
import redis.asyncio
from aiohttp import web
from cryptography.fernet import Fernet
from redis.crc import key_slot

from aiopay_auth import ConfigError, RefreshPolicy, Secret, TokenHolder, TokenManager
from aiopay_auth._token import Token
from aiopay_auth.fleet import RedisFleet, SharedTokenSource, fleet_key
from aiopay_auth.fleet._entry import Entry
from aiopay_auth.fleet._wait import Announcements
from aiopay_auth.providers import cm, generic
from aiopay_auth.testing import FakeProvider, blackhole, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .conftest import RedisSetup
from .endpoints import WebEndpoint, make_provider, oauth_error, token_json
from .helpers import eventually
from .loopback import tcp_server
from .redis_server import RedisClusterServers, RedisServer, client_for, close_client


pytestmark = pytest.mark.anyio

POLICY = RefreshPolicy(backoff_initial=0.05, backoff_max=0.2, fetch_timeout=2)


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
    assert 0 == sum(h.health().failures for h in holders)
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
        assert 0 == sum(h.health().failures for h in holders)
        assert 0 == fake.api_unauthorized
    finally:
        await client.aclose()


async def _serving_member(
    stack: AsyncExitStack, client: redis.asyncio.Redis, fake: FakeProvider
) -> tuple[Fleet, TokenHolder, Token]:
    """One member whose every Redis operation may take 10 s, serving its first token."""
    fleet = Fleet(stack, RedisFleet(client, unencrypted=True, redis_timeout=10.0))
    holder = await fleet.worker(fake)
    await holder.get()
    served = holder.current
    assert served is not None
    return fleet, holder, served


@asynccontextmanager
async def _paused(client: redis.asyncio.Redis, milliseconds: int) -> AsyncIterator[None]:
    """Redis answers no client (CLIENT PAUSE) for *milliseconds*, or until the block ends."""
    await client.client_pause(milliseconds, all=True)
    try:
        yield
    finally:
        await client.client_unpause()


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
            _, holder, served = await _serving_member(stack, member, fake)
            async with _paused(client, 2500):
                await eventually(lambda: holder.latest is not served, within=5)
                fresh = holder.latest
                assert fresh is not None
                # Its token request went out before the served token expired.
                assert fresh.issued_at < served.expires_at
                assert "local" == holder.health().store
                assert 2 == fake.token_calls
            await eventually(lambda: holder.health().store == "shared", within=5)
        assert 0 == holder.health().failures
    finally:
        await member.aclose()


def _gets(server: RedisServer) -> int:
    """GET commands the server has run so far."""
    stat = server.info("commandstats").get("cmdstat_get", "calls=0")
    return int(stat.split(",")[0].removeprefix("calls="))


async def test_a_redis_that_stops_answering_during_a_wait_on_the_lease_never_outlasts_the_token(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # "Another process" holds the lease; while this one waits on it, Redis
    # stops answering. With no refresh token to spend twice (client
    # credentials), each look is bounded by half the served token's life.
    fake = await fake_provider("cm", lifetime=1.5)
    async with AsyncExitStack() as stack:
        fleet, holder, served = await _serving_member(stack, client, fake)
        _, lease, _ = fleet.fleet.keys(holder.provider)
        await client.set(lease, b"a fence of another process", px=20_000)
        await eventually(lambda: holder.fetching, within=5)
        async with _paused(client, 3000):
            await eventually(lambda: holder.latest is not served, within=5)
            fresh = holder.latest
            assert fresh is not None
            assert fresh.issued_at < served.expires_at
            assert 2 == fake.token_calls
            assert "local" == holder.health().store


async def test_a_redis_that_stops_answering_during_the_token_call_never_outlasts_the_served_token(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # The lease holder's token call is slow; Redis stops answering while it is
    # in flight. Storing the new token waits no longer than half of what is
    # left of the served one: the new token is published before it expires.
    fake = await fake_provider("cm", lifetime=3.0)
    async with AsyncExitStack() as stack:
        _, holder, served = await _serving_member(stack, client, fake)
        fake.token_delay = 0.4
        await eventually(lambda: fake.token_calls_in_flight == 1, within=5)
        async with _paused(client, 3000):
            with anyio.fail_after(5):
                while holder.latest is served:
                    assert holder.usable() is not None  # never a moment without
                    await anyio.sleep(0.005)
            assert 2 == fake.tokens_issued  # the one published is the slow call's
            assert "local" == holder.health().store  # its store timed out


async def test_a_lease_planted_with_no_expiry_is_removed(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # Every member sets its lease with an expiry: one without is planted, and
    # would make every refresh of a fleet on refresh tokens wait 2 x lease_ttl.
    fake = await fake_provider("payme", lifetime=30)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True))
        _, lease, _ = fleet.fleet.keys(provider_for(fake))
        await client.set(lease, b"planted")
        holder = await fleet.worker(fake)
        with anyio.fail_after(5):  # not 2 x lease_ttl = 30 s
            await holder.get()
        assert 1 == fake.token_calls
        assert 1 == fleet.sources[0].refused_entries
        assert "shared" == holder.health().store
        assert await client.get(lease) != b"planted"


async def test_a_waiting_member_keeps_to_its_poll_rate_whoever_publishes(
    fake_provider: FakeProviderFactory, redis_server: RedisServer, client: redis.asyncio.Redis
) -> None:
    # Announcements on the credential's channel wake a waiting member once;
    # a flood of them must not turn into a flood of GETs.
    poll = 0.05
    fake = await fake_provider("cm", lifetime=30)
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack, RedisFleet(client, unencrypted=True, poll_interval=poll))
        _, lease, channel = fleet.fleet.keys(provider_for(fake))
        await client.set(lease, b"a fence of another process", px=1_500)
        before = _gets(redis_server)
        started = time.monotonic()
        holder = await fleet.worker(fake)
        published = 0
        while holder.usable() is None:  # the lease expires after 1.5 s, then it leads
            assert time.monotonic() - started < 10
            await client.publish(channel, b"published")
            published += 1
        elapsed = time.monotonic() - started
        gets = _gets(redis_server) - before
    print(f"\n{published} announcements in {elapsed:.2f} s; the waiter sent {gets} GETs")
    assert published > 3 * elapsed / poll  # a flood, far above the poll rate
    assert gets <= elapsed / poll + 6  # the first look, the lead's own, the edges


def _platform(**options: Any) -> Any:
    """A merchant's profile on a platform's one client id (a marketplace's set-up)."""
    fields: dict[str, Any] = {
        "name": "platform",
        "token_url": "https://auth.example/token",
        "api": "https://api.example/v1",
        "client_id": "platform",
        "client_secret": "platform-secret",
    }
    return generic.provider(**(fields | options))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"refresh_token": "rt-merchant-a"}, {"refresh_token": "rt-merchant-b"}),
        ({"refresh_token": "rt-merchant-a"}, {}),
        (
            {"extra_fields": {"merchant_key": Secret("key-a")}},
            {"extra_fields": {"merchant_key": Secret("key-b")}},
        ),
        ({"extra_fields": {"merchant": "a"}}, {"extra_fields": {"merchant": "b"}}),
        ({"extra_headers": {"X-Merchant": "a"}}, {"extra_headers": {"X-Merchant": "b"}}),
        (
            {"extra_headers": {"X-Merchant-Key": Secret("key-a")}},
            {"extra_headers": {"X-Merchant-Key": Secret("key-b")}},
        ),
        ({"scope": "payments"}, {"scope": "refunds"}),
    ],
    ids=[
        "refresh-token",
        "refresh-token-or-none",
        "secret-field",
        "field",
        "header",
        "secret-header",
        "scope",
    ],
)
def test_merchants_told_apart_only_by_a_token_request_detail_never_share_a_key(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    # Two merchants on one platform client id: the same key would hand one
    # merchant's token to the other's requests.
    assert fleet_key(_platform(**one)) != fleet_key(_platform(**other))


def test_one_credential_keeps_its_key_and_the_key_shows_no_secret() -> None:
    # The same credential in every process, and across a secret rotation.
    secretive = {
        "refresh_token": "rt-secret-value",
        "extra_fields": {"merchant_key": Secret("field-secret-value")},
        "extra_headers": {"X-Merchant-Key": Secret("header-secret-value")},
    }
    key = fleet_key(_platform(**secretive))
    assert key == fleet_key(_platform(**secretive))
    assert key == fleet_key(_platform(client_secret="rotated-secret", **secretive))
    assert 32 == len(key)
    for secret in ("rt-secret-value", "field-secret-value", "header-secret-value"):
        assert secret not in key


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
    assert 0 == sum(h.health().failures for h in holders)


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
    assert 0 == holder.health().failures


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
    assert 0 == sum(h.health().failures for h in holders)
    assert sum(s.refused_entries for s in members.sources) >= 1


async def test_a_planted_plausible_token_lives_a_day_at_most_and_a_key_refuses_it(
    fake_provider: FakeProviderFactory, client: redis.asyncio.Redis
) -> None:
    # Without a key, Redis write access substitutes tokens (the threat model):
    # a plausible one is used, but its 10-year expiry is cut to the one-day
    # cap, so the refresh comes within a day. With a key it is absent.
    fake = await fake_provider("cm", lifetime=30)
    ten_years = time.time() + 10 * 365 * 86400
    plain = RedisFleet(client, unencrypted=True)
    token_key, _, _ = plain.keys(provider_for(fake))
    await client.set(token_key, _entry(access_token="attacker-token", expires_wall=ten_years))
    async with AsyncExitStack() as stack:
        with anyio.fail_after(10):
            used = await (await Fleet(stack, plain).worker(fake)).get()
        keyed = RedisFleet(client, encryption_key=Fernet.generate_key())
        await client.set(token_key, _entry(access_token="attacker-token", expires_wall=ten_years))
        members = Fleet(stack, keyed)
        with anyio.fail_after(10):
            fetched = await (await members.worker(fake)).get()
    assert "attacker-token" == used.access_token
    assert used.lifetime <= 86400
    assert used.expires_at - used.issued_at <= 86400
    assert fetched.access_token in fake.issued_tokens
    assert 1 == fake.token_calls
    assert members.sources[0].refused_entries >= 1  # read at the look and under the lease


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
    assert 0 == sum(h.health().failures for h in holders)
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
    assert 0 == sum(h.health().failures for h in holders)
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
        # The client learns the cluster's slots before the members start: three
        # refreshers at once on a cold client all waited for its discovery, past
        # the 0.5 s redis_timeout under coverage, and fetched alone (seen once in
        # CI). What this test proves is the plain pub/sub, not a cold client.
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        await client.initialize()
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


# --- The lease, the refresh token and Redis trouble, step by step ------------------


def _stored(access: str, refresh: str | None) -> Entry:
    now = time.time()
    return Entry(
        access_token=access,
        token_type="Bearer",
        issued_wall=now,
        expires_wall=now + 30,
        refresh_token=refresh,
        scope=None,
    )


def _calls(server: RedisServer, command: str) -> int:
    """How many times the server ran *command* (``INFO commandstats``)."""
    stat = server.info("commandstats").get(f"cmdstat_{command}", "calls=0")
    return int(stat.partition("calls=")[2].partition(",")[0])


async def test_a_refresh_uses_the_fleets_newest_refresh_token_under_an_expiring_lease(
    endpoint: WebEndpoint, client: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    answers = iter([("A2", "R3"), ("A3", None), ("A4", "R4")])
    grants: list[tuple[object, object]] = []
    lease_ttls: list[int] = []
    provider = make_provider(endpoint.base)
    fleet = RedisFleet(client, unencrypted=True, lease_ttl=5)
    token_key, lease_key, _ = fleet.keys(provider)

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        grants.append((form.get("grant_type"), form.get("refresh_token")))
        lease_ttls.append(await client.pttl(lease_key))  # asked under the lease
        access, refresh = next(answers)
        return token_json(access, 30, **({"refresh_token": refresh} if refresh else {}))

    async def stored() -> tuple[str, str | None]:
        raw = await client.get(token_key)
        assert isinstance(raw, bytes)
        entry = fleet.decode(raw)
        assert entry is not None
        return entry.access_token, entry.refresh_token

    endpoint.handler = handler
    await client.set(token_key, fleet.encode(_stored("A1", "R1")), px=30_000)
    async with AsyncExitStack() as stack:
        members = Fleet(stack, fleet)
        tokens = await stack.enter_async_context(
            TokenManager(policy=POLICY, token_source=members.wrap)
        )
        sets = await anyio.to_thread.run_sync(_calls, redis_server, "set")
        holder = tokens.add(provider)
        assert "shared" == holder.health().store
        first = await holder.get()
        assert ("A1", Secret("R1")) == (first.access_token, first.refresh_token)
        # Taken from Redis without a lease (no SET NX).
        assert sets == await anyio.to_thread.run_sync(_calls, redis_server, "set")
        # Another member spent R1 meanwhile: the fleet's refresh token is now R2.
        await client.set(token_key, fleet.encode(_stored("A1", "R2")), px=30_000)
        assert holder.invalidate(first)
        second = await holder.get()
        assert ("A2", ("A2", "R3")) == (second.access_token, await stored())
        await eventually(lambda: not holder.backing_off())
        assert holder.invalidate(second)
        third = await holder.get()
        # No new refresh token came with A3: the one just used is kept.
        assert ("A3", ("A3", "R3")) == (third.access_token, await stored())
        assert 0 == await client.exists(lease_key)  # released by its holder
        # A member took the lease and died: once its lease expires, the
        # waiting member takes over, with the refresh grant and the fleet's R3.
        await client.set(lease_key, "a member that died", px=300)
        await eventually(lambda: not holder.backing_off())
        assert holder.invalidate(third)
        fourth = await holder.get()
        assert ("A4", ("A4", "R4")) == (fourth.access_token, await stored())
        # Another member's newer token: taken, not fetched.
        await client.set(token_key, fleet.encode(_stored("A5", "R5")), px=30_000)
        await eventually(lambda: not holder.backing_off())
        assert holder.invalidate(fourth)
        assert "A5" == (await holder.get()).access_token
        source = members.sources[0]
        assert (3, 2) == (source.http_fetches, source.shared_hits)
    assert [
        ("refresh_token", "R2"),
        ("refresh_token", "R3"),
        ("refresh_token", "R3"),
    ] == grants
    assert all(0 < ttl <= 5000 for ttl in lease_ttls), lease_ttls


async def test_a_lease_that_is_never_released_is_waited_out_then_fetched_alone(
    endpoint: WebEndpoint,
    client: redis.asyncio.Redis,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiopay_auth")
    answers = iter(["A1", "A2"])

    async def handler(_: web.Request) -> web.Response:
        return token_json(next(answers), 30)

    endpoint.handler = handler
    provider = make_provider(endpoint.base)
    fleet = RedisFleet(client, unencrypted=True, lease_ttl=0.3, poll_interval=0.05)
    token_key, lease_key, _ = fleet.keys(provider)
    await client.set(lease_key, "a member that died", px=60_000)
    sets_before = _calls(redis_server, "set")
    async with TokenManager(policy=POLICY, token_source=fleet.wrap) as tokens:
        holder = tokens.add(provider)
        started = time.monotonic()
        first = await holder.get()
        waited = time.monotonic() - started
        assert ("A1", "local") == (first.access_token, holder.health().store)
        assert waited >= 2 * 0.3  # the follower's bound: twice the lease's life
        # ...and no more: each look after the first waits poll_interval, so a
        # bound of 2 x lease_ttl allows at most 2 * 0.3 / 0.05 + 1 looks (each
        # one SET NX of the lease), plus the look before the wait. Counted by
        # Redis, not by a clock: a loaded machine only makes fewer looks.
        looks = _calls(redis_server, "set") - sets_before
        assert 1 <= looks <= 2 * 0.3 / 0.05 + 2, looks
        assert b"a member that died" == await client.get(lease_key)  # not ours to delete
        assert await client.get(token_key) is None
        # The dead member's lease goes; the next refresh is shared again.
        await client.delete(lease_key)
        assert holder.invalidate(first)
        second = await holder.get()
        assert ("A2", "shared") == (second.access_token, holder.health().store)
    events = [r.getMessage() for r in caplog.records if "fleet_" in r.getMessage()]
    assert 2 == len(events), events
    assert events[0].endswith(
        "fleet_degraded provider='hostile' reason='no token from the lease holder in time'"
    )
    assert events[1].endswith("fleet_rejoined provider='hostile'")
    assert 2 == len(endpoint.calls)


async def test_a_fetch_cancelled_by_an_anyio_scope_still_releases_its_lease(
    client: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    # task.cancel() is delivered once, so closing a manager cannot show whether
    # the release is shielded; an anyio scope cancels every await after it too,
    # the release's among them, unless it is shielded. On a live connection
    # redis-py writes the command before its first await, so the release
    # would reach Redis either way; here the member's idle connections are
    # closed during the token request, so the release must connect first.
    member = redis.asyncio.Redis.from_url(redis_server.url)
    fleet = RedisFleet(member, unencrypted=True)  # lease_ttl 15 s
    holder = TokenHolder(make_provider("http://127.0.0.1:1"))
    _, lease_key, _ = fleet.keys(holder.provider)
    held: list[object] = []

    class Hangs:
        """A token request that never ends, after noting the lease it runs under."""

        async def fetch(self, refresh_token: Secret | None) -> Token:
            held.append(await client.get(lease_key))
            await member.connection_pool.disconnect()
            scope.cancel()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

    source = fleet.wrap(holder, Hangs())
    try:
        with anyio.fail_after(5), anyio.CancelScope() as scope:
            await source.fetch(None)
    finally:
        await member.aclose()
    assert scope.cancelled_caught
    assert 1 == len(held) == source.http_fetches
    assert held[0] is not None  # the request ran under our lease...
    assert await client.get(lease_key) is None  # ...released at once, not in 15 s


async def test_a_redis_that_never_answers_is_cut_off_at_redis_timeout(
    endpoint: WebEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiopay_auth")

    grants: list[tuple[object, object]] = []
    answers = iter(["A1", "A2"])

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        grants.append((form.get("grant_type"), form.get("refresh_token")))
        return token_json(next(answers), 30, refresh_token="R1")

    endpoint.handler = handler
    with blackhole() as dead:
        # Its own connect timeout is long: only the fleet's redis_timeout can cut the wait.
        assert dead.host is not None
        assert dead.port is not None
        client = redis.asyncio.Redis(host=dead.host, port=dead.port, socket_connect_timeout=60)
        try:
            fleet = RedisFleet(client, unencrypted=True, redis_timeout=0.2)
            async with AsyncExitStack() as stack:
                members = Fleet(stack, fleet)
                tokens = await stack.enter_async_context(
                    TokenManager(policy=POLICY, token_source=members.wrap)
                )
                holder = tokens.add(make_provider(endpoint.base))
                with anyio.fail_after(20):
                    token = await holder.get()
                assert ("A1", "local") == (token.access_token, holder.health().store)
                assert holder.invalidate(token)
                with anyio.fail_after(20):
                    assert "A2" == (await holder.get()).access_token
                assert 2 == members.sources[0].http_fetches
        finally:
            await client.aclose()
    degraded = [r.getMessage() for r in caplog.records if "fleet_degraded" in r.getMessage()]
    assert 1 == len(degraded)
    assert degraded[0].endswith("fleet_degraded provider='hostile' reason='redis timed out'")
    # Alone, the member asks with the primary grant, never with the refresh
    # token: one the fleet shares may be being spent under the lease.
    assert [("client_credentials", None), ("client_credentials", None)] == grants


async def test_a_waiting_member_wakes_on_the_announcement_not_the_poll(
    endpoint: WebEndpoint, client: redis.asyncio.Redis
) -> None:
    # The leader's token call is held until the follower is subscribed; with a
    # 10 s poll interval, only the announcement can bring the follower its token
    # within the 5 s bound.
    release = asyncio.Event()

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return token_json("A1", 30)

    endpoint.handler = handler
    provider = make_provider(endpoint.base)
    fleet = RedisFleet(client, unencrypted=True, poll_interval=10.0)
    channel = fleet.keys(provider)[2]
    try:
        async with AsyncExitStack() as stack:
            members = Fleet(stack, fleet)
            managers = [
                await stack.enter_async_context(
                    TokenManager(policy=POLICY, token_source=members.wrap)
                )
                for _ in range(2)
            ]
            leader = managers[0].add(provider)
            await eventually(lambda: len(endpoint.calls) == 1)
            follower = managers[1].add(provider)
            with anyio.fail_after(5):
                while (await client.pubsub_numsub(channel))[0][1] < 1:  # noqa: ASYNC110 - Redis, no event
                    await anyio.sleep(0.01)
            release.set()
            with anyio.fail_after(5):
                tokens = [await leader.get(), await follower.get()]
    finally:
        release.set()
    assert ["A1", "A1"] == [t.access_token for t in tokens]
    assert 1 == len(endpoint.calls)
    assert [1, 0] == [s.http_fetches for s in members.sources]
    assert [0, 1] == [s.shared_hits for s in members.sources]


async def test_announcements_wait_the_whole_interval_or_wake_on_one(
    client: redis.asyncio.Redis,
) -> None:
    async with Announcements.open(client, "events", timeout=1.0) as announcements:
        assert announcements is not None
        assert 1 == (await client.pubsub_numsub("events"))[0][1]
        started = time.monotonic()
        assert not await announcements.wait(0.2)  # nothing announced: the whole interval
        assert time.monotonic() - started >= 0.2
        await client.publish("events", "published")
        with anyio.fail_after(5):
            assert await announcements.wait(10.0)
    with anyio.fail_after(5):  # the subscription ends with the wait
        while (await client.pubsub_numsub("events"))[0][1]:  # noqa: ASYNC110 - Redis, no event
            await anyio.sleep(0.01)
    with blackhole() as dead:
        assert dead.host is not None
        assert dead.port is not None
        unreachable = redis.asyncio.Redis(host=dead.host, port=dead.port, socket_connect_timeout=60)
        try:
            with anyio.fail_after(5):
                async with Announcements.open(unreachable, "events", timeout=0.2) as none:
                    assert none is None  # no subscription: the waiter polls by sleeping
        finally:
            await unreachable.aclose()


def _error_replies(server: RedisServer) -> int:
    """How many commands the server refused as unknown."""
    stat = server.info("errorstats").get("errorstat_ERR", "count=0")
    return int(stat.partition("count=")[2].partition(",")[0])


@pytest.fixture(name="redis_without_pubsub", scope="module")
def _redis_without_pubsub() -> Iterator[RedisServer]:
    """A redis-server on which SUBSCRIBE is disabled: waiters must poll."""
    server = RedisServer(extra=("--rename-command", "SUBSCRIBE", ""))
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


async def test_without_a_subscription_a_waiting_member_polls(
    endpoint: WebEndpoint, redis_without_pubsub: RedisServer
) -> None:
    release = asyncio.Event()

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return token_json("A1", 30)

    endpoint.handler = handler
    provider = make_provider(endpoint.base)
    client = redis.asyncio.Redis.from_url(redis_without_pubsub.url)
    try:
        await client.flushall()
        fleet = RedisFleet(client, unencrypted=True, poll_interval=0.05)
        async with AsyncExitStack() as stack:
            members = Fleet(stack, fleet)
            managers = [
                await stack.enter_async_context(
                    TokenManager(policy=POLICY, token_source=members.wrap)
                )
                for _ in range(2)
            ]
            leader = managers[0].add(provider)
            await eventually(lambda: len(endpoint.calls) == 1)
            refused = await anyio.to_thread.run_sync(_error_replies, redis_without_pubsub)
            follower = managers[1].add(provider)
            with anyio.fail_after(5):  # the follower is waiting: its SUBSCRIBE was refused
                while (  # noqa: ASYNC110 - Redis, no event
                    await anyio.to_thread.run_sync(_error_replies, redis_without_pubsub) == refused
                ):
                    await anyio.sleep(0.01)
            release.set()
            with anyio.fail_after(5):
                tokens = [await leader.get(), await follower.get()]
            stores = [h.health().store for h in (leader, follower)]
            failures = [h.health().failures for h in (leader, follower)]
    finally:
        release.set()
        await client.aclose()
    assert ["A1", "A1"] == [t.access_token for t in tokens]
    assert ["shared", "shared"] == stores
    assert [0, 0] == failures  # polled, not failed and retried
    assert [1, 0] == [s.http_fetches for s in members.sources]


async def test_a_token_fetched_under_the_lease_is_kept_when_redis_dies_before_the_store(
    endpoint: WebEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis stops while the lease holder's token call is in flight: the token
    # it brings back (whose refresh token may have spent another) is used, not
    # asked for a second time.
    caplog.set_level(logging.WARNING, logger="aiopay_auth")
    server = RedisServer()
    await anyio.to_thread.run_sync(server.start)
    client = redis.asyncio.Redis.from_url(server.url, socket_connect_timeout=0.2)

    async def handler(_: web.Request) -> web.Response:
        await anyio.to_thread.run_sync(server.stop)
        return token_json("A1", 30, refresh_token="R1")

    endpoint.handler = handler
    try:
        fleet = RedisFleet(client, unencrypted=True, redis_timeout=0.3)
        async with TokenManager(policy=POLICY, token_source=fleet.wrap) as tokens:
            holder = tokens.add(make_provider(endpoint.base))
            with anyio.fail_after(10):
                token = await holder.get()
            assert ("A1", "local") == (token.access_token, holder.health().store)
    finally:
        await client.aclose()
        await anyio.to_thread.run_sync(server.shutdown)
    assert 1 == len(endpoint.calls)
    degraded = [r.getMessage() for r in caplog.records if "fleet_degraded" in r.getMessage()]
    assert 1 == len(degraded)


async def test_after_a_refused_refresh_token_the_primary_grant_is_asked_not_the_stored_one(
    endpoint: WebEndpoint, client: redis.asyncio.Redis
) -> None:
    grants: list[tuple[object, object]] = []

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        grants.append((form.get("grant_type"), form.get("refresh_token")))
        if form.get("grant_type") == "refresh_token":
            return oauth_error(400, "invalid_grant", "refresh token revoked")
        return token_json("A2", 30)

    endpoint.handler = handler
    provider = make_provider(endpoint.base)
    fleet = RedisFleet(client, unencrypted=True)
    token_key = fleet.keys(provider)[0]
    await client.set(token_key, fleet.encode(_stored("A1", "R1")), px=30_000)
    async with TokenManager(policy=POLICY, token_source=fleet.wrap) as tokens:
        holder = tokens.add(provider)
        first = await holder.get()
        assert holder.invalidate(first)
        second = await holder.get()
    assert "A2" == second.access_token
    # R1 refused: the refresher drops it, and the fleet does not bring it back.
    assert [("refresh_token", "R1"), ("client_credentials", None)] == grants


async def test_each_refused_read_is_counted_and_the_first_is_a_warning(
    endpoint: WebEndpoint, client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")

    async def handler(_: web.Request) -> web.Response:
        return token_json("A1", 30)

    endpoint.handler = handler
    provider = make_provider(endpoint.base)
    fleet = RedisFleet(client, unencrypted=True)
    await client.set(fleet.keys(provider)[0], _entry(token_type="mac"))
    async with AsyncExitStack() as stack:
        members = Fleet(stack, fleet)
        tokens = await stack.enter_async_context(
            TokenManager(policy=POLICY, token_source=members.wrap)
        )
        token = await tokens.add(provider).get()
    assert "A1" == token.access_token
    # Read before the lease and again under it: refused twice, then overwritten.
    assert 2 == members.sources[0].refused_entries
    refused = [
        (r.levelname, r.getMessage()) for r in caplog.records if "entry_refused" in r.getMessage()
    ]
    said = "aiopay_auth.fleet_entry_refused provider='hostile' reason='token_type is not Bearer'"
    assert [("WARNING", said), ("DEBUG", said)] == refused
    assert not [r for r in caplog.records if "fleet_rejoined" in r.getMessage()]


def test_a_stored_token_issued_at_the_same_instant_as_ours_is_not_newer() -> None:
    now = 1_000_000.0
    fleet = RedisFleet(redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: now)
    holder = TokenHolder(make_provider("http://127.0.0.1:1"), clock=lambda: 100.0)
    source = fleet.wrap(holder, None)  # type: ignore[arg-type]  # never asked here
    ours = Token.bearer("A1", issued_at=90.0, lifetime=30)

    def stored(access: str, issued_wall: float) -> Entry:
        return Entry(
            access_token=access,
            token_type="Bearer",
            issued_wall=issued_wall,
            expires_wall=issued_wall + 30,
            refresh_token=None,
            scope=None,
        )

    assert source._newer_than(stored("A2", now - 10), ours) is None  # the same instant
    assert source._newer_than(stored("A1", now - 5), ours) is None  # the same token
    newer = source._newer_than(stored("A2", now - 9.5), ours)
    assert newer is not None
    assert ("A2", 90.5) == (newer.access_token, newer.issued_at)
    assert source._newer_than(stored("A2", now - 10), None) is not None
    assert source._newer_than(None, ours) is None


async def _until_settled(
    client: redis.asyncio.Redis, fleet: RedisFleet, holder: TokenHolder, *, within: float
) -> None:
    """Wait until the holder is shared again, no lease is left, and Redis holds its token."""
    key, lease, _ = fleet.keys(holder.provider)
    with anyio.fail_after(within):
        while True:
            raw = await client.get(key)
            served = holder.usable()
            if (
                holder.health().store == "shared"
                and not await client.exists(lease)
                and isinstance(raw, bytes)
                and served is not None
                and fleet.read(raw).access_token == served.access_token
            ):
                return
            await anyio.sleep(0.02)


async def test_a_lease_left_by_a_failed_store_is_settled_at_the_next_contact(
    endpoint: WebEndpoint, client: redis.asyncio.Redis
) -> None:
    # The store of the second token does not get through in time (writes
    # paused), so the lease holder fetches alone and keeps the lease it could
    # not release. Left alone, that lease would keep every process, this one
    # too, from refreshing through Redis for lease_ttl (15 s). At its next
    # contact the process stores its newest token under that lease and
    # releases it.
    calls = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            await client.client_pause(1000, all=False)  # writes only
        return token_json(f"A{calls}", 2, refresh_token=f"R{calls}")

    endpoint.handler = handler
    fleet = RedisFleet(client, unencrypted=True, redis_timeout=0.3)
    assert fleet.lease_ttl == 15
    async with TokenManager(policy=POLICY, token_source=fleet.wrap) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await holder.get()
        await eventually(lambda: holder.health().store == "local", within=5)
        assert calls == 2
        # The pause is over within a second; the next refresh settles the lease.
        await _until_settled(client, fleet, holder, within=4)
    assert 0 == holder.health().failures


class _AnswerLosingRelay:
    """A TCP relay to Redis that, once armed, drops Redis's answer to one ``SET … NX``.

    Redis runs the command; the client never hears that it did.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.port)
        drop_next = False

        async def requests() -> None:
            nonlocal drop_next
            while data := await reader.read(65536):
                if self.armed and b"\r\nNX\r\n" in data.upper():
                    self.armed, drop_next = False, True
                upstream.write(data)
                await upstream.drain()

        async def answers() -> None:
            nonlocal drop_next
            while data := await upstream_reader.read(65536):
                if drop_next:
                    drop_next = False
                    self.dropped += 1
                    continue
                writer.write(data)
                await writer.drain()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(requests)
                group.start_soon(answers)
        finally:
            upstream.close()
            writer.close()


async def test_a_lease_taken_while_its_answer_was_lost_is_released_at_once(
    endpoint: WebEndpoint, redis_server: RedisServer, client: redis.asyncio.Redis
) -> None:
    # Redis sets the lease, but its answer is lost: the process times out,
    # fetches alone, and cannot know the lease is its own. Left alone, that
    # lease would hold every refresh through Redis off for lease_ttl (15 s);
    # with 30-s tokens this process's next refresh is as far off. Redis
    # answers again by the time the token is fetched: the lease is released
    # then.
    calls = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return token_json(f"A{calls}", 30, refresh_token=f"R{calls}")

    endpoint.handler = handler
    relay = _AnswerLosingRelay(redis_server.port)
    async with tcp_server(relay.handle) as port:
        member = redis.asyncio.Redis(host="127.0.0.1", port=port)
        try:
            fleet = RedisFleet(member, unencrypted=True, redis_timeout=0.3)
            async with TokenManager(policy=POLICY, token_source=fleet.wrap) as tokens:
                holder = tokens.add(make_provider(endpoint.base))
                first = await holder.get()
                relay.armed = True
                holder.invalidate(first)
                await eventually(lambda: holder.current is not None, within=5)
                # Redis ran the SET NX (it answered, and the relay dropped that).
                assert (1, "local") == (relay.dropped, holder.health().store)
                _, lease, _ = fleet.keys(holder.provider)
                with anyio.fail_after(2):
                    while True:
                        if not await client.exists(lease):
                            break
                        await anyio.sleep(0.02)
        finally:
            await member.aclose()
    assert 0 == holder.health().failures
