"""The fleet's pure parts: stored entries, the key, the configuration, the codec.

No Redis here: these are the rules a stored token must pass, checked one by
one, exactly (the refusal reasons are what ``fleet_entry_refused`` logs).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import redis.asyncio
import redis.asyncio.cluster
from cryptography.fernet import Fernet

from aiopay_auth import ConfigError, Provider
from aiopay_auth._secret import Secret
from aiopay_auth._token import Token
from aiopay_auth.fleet import RedisFleet, fleet_key
from aiopay_auth.fleet._entry import Entry, EntryRefused, entry_from_json, entry_to_json
from aiopay_auth.fleet._wait import is_cluster, publish_command


NOW = 1_000_000.0


def _fields(token: Token) -> dict[str, object]:
    return attrs.asdict(token, recurse=False)  # Token compares by identity


def _raw(**fields: object) -> bytes:
    entry: dict[str, object] = {
        "access_token": "stored-token",
        "token_type": "Bearer",
        "issued_wall": NOW - 5,
        "expires_wall": NOW + 25,
        "refresh_token": "stored-refresh",
        "scope": "pay",
    }
    entry.update(fields)
    return json.dumps(entry).encode()


def test_a_token_stored_and_read_back_is_the_same_token_on_the_readers_clock() -> None:
    token = Token.bearer(
        "access-1",
        issued_at=50.0,
        lifetime=30.0,
        token_type="bearer",
        refresh_token=Secret("refresh-1"),
        scope="payments",
    )
    # Written at monotonic 60 (10 s after issue), wall 1,000,000.
    entry = Entry.of(token, clock=60.0, wall=NOW, refresh_token="refresh-2")
    assert (
        Entry(
            access_token="access-1",
            token_type="bearer",
            issued_wall=NOW - 10,
            expires_wall=NOW + 20,
            refresh_token="refresh-2",
            scope="payments",
        )
        == entry
    )
    read = entry_from_json(entry_to_json(entry), wall=NOW + 4, tolerance=1.0)
    assert entry == read
    # Read 4 s later by a process whose monotonic clock says 500.
    again = read.to_token(clock=500.0, wall=NOW + 4)
    assert _fields(again) == _fields(
        Token.bearer(
            "access-1",
            issued_at=500.0 - 14,
            lifetime=30.0,
            token_type="bearer",
            refresh_token=Secret("refresh-2"),
            scope="payments",
        )
    )
    without = attrs.evolve(read, refresh_token=None, scope=None).to_token(clock=0.0, wall=NOW)
    assert (None, None) == (without.refresh_token, without.scope)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"{", "not JSON", id="not-json"),
        pytest.param(b"[1]", "not a JSON object", id="array"),
        pytest.param(_raw(access_token=7), "no usable access_token", id="number-token"),
        pytest.param(_raw(access_token="a b"), "no usable access_token", id="space-in-token"),
        pytest.param(_raw(token_type="mac"), "token_type is not Bearer", id="mac"),
        pytest.param(_raw(token_type=None), "token_type is not Bearer", id="no-type"),
        pytest.param(_raw(issued_wall="x"), "issued_wall is not a number", id="issued-text"),
        pytest.param(_raw(expires_wall=True), "expires_wall is not a number", id="expires-bool"),
        pytest.param(_raw(expires_wall=10**400), "expires_wall is out of range", id="huge"),
        pytest.param(
            _raw(expires_wall=NOW - 5 + 0.1),
            "lifetime: expires_in of 0.1 s is too short to use (under 0.2 s)",
            id="too-short",
        ),
        pytest.param(
            _raw(expires_wall=NOW - 6),
            "lifetime: expires_in must be a positive number of seconds",
            id="negative",
        ),
        pytest.param(_raw(refresh_token=1), "refresh_token is not text", id="refresh-number"),
        pytest.param(_raw(scope=["pay"]), "scope is not text", id="scope-list"),
        pytest.param(
            _raw(issued_wall=NOW + 1.5, expires_wall=NOW + 30),
            "issued in the future beyond the clock tolerance",
            id="future",
        ),
        pytest.param(_raw(issued_wall=NOW - 30, expires_wall=NOW), "expired", id="expired"),
    ],
)
def test_a_refused_entry_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(EntryRefused) as refused:
        entry_from_json(raw, wall=NOW, tolerance=1.0)
    assert reason == str(refused.value)


def test_not_finite_wall_times_are_refused() -> None:
    # json.dumps writes NaN and Infinity, which json.loads reads back.
    for name in ("issued_wall", "expires_wall"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(EntryRefused) as refused:
                entry_from_json(_raw(**{name: value}), wall=NOW, tolerance=1.0)
            assert f"{name} is not finite" == str(refused.value)


def test_an_entry_at_its_boundaries() -> None:
    # Issued exactly at the tolerance: believed; expiring exactly now: expired.
    at_tolerance = entry_from_json(
        _raw(issued_wall=NOW + 1.0, expires_wall=NOW + 31), wall=NOW, tolerance=1.0
    )
    assert NOW + 1.0 == at_tolerance.issued_wall
    with pytest.raises(EntryRefused, match=r"^expired$"):
        entry_from_json(_raw(issued_wall=NOW - 30, expires_wall=NOW), wall=NOW, tolerance=1.0)
    alive = entry_from_json(
        _raw(issued_wall=NOW - 30, expires_wall=NOW + 0.001), wall=NOW, tolerance=1.0
    )
    assert NOW + 0.001 == pytest.approx(alive.expires_wall)
    # An empty refresh token is none; a stored one is kept.
    assert entry_from_json(_raw(refresh_token=""), wall=NOW, tolerance=1.0).refresh_token is None
    kept = entry_from_json(_raw(), wall=NOW, tolerance=1.0)
    assert ("stored-token", "Bearer", "stored-refresh", "pay") == (
        kept.access_token,
        kept.token_type,
        kept.refresh_token,
        kept.scope,
    )


def _provider(**overrides: Any) -> Provider:
    fields: dict[str, Any] = {
        "name": "fleet",
        "token_url": "https://auth.example/token",
        "api": "https://api.example/v1",
        "client_id": "client-1",
        "client_secret": "secret-1",
    }
    fields.update(overrides)
    return Provider(**fields)


def test_the_fleet_key_names_the_whole_credential_and_no_secret() -> None:
    key = fleet_key(_provider())
    assert 32 == len(key)
    assert key == fleet_key(_provider(name="another-name", client_secret="another-secret"))
    differs = [
        _provider(token_url="https://auth.example/other-token"),
        _provider(client_id="client-2"),
        _provider(scope="pay"),
        _provider(grant_type="password", username="u", password="p"),
        _provider(grant_type="password", username="v", password="p"),
        _provider(extra_fields={"audience": "a"}),
        _provider(extra_fields={"audience": "b"}),
    ]
    keys = [fleet_key(provider) for provider in differs]
    assert key not in keys
    assert len(set(keys)) == len(keys)
    # The order of extra fields does not matter.
    assert fleet_key(_provider(extra_fields={"a": "1", "b": "2"})) == fleet_key(
        _provider(extra_fields={"b": "2", "a": "1"})
    )


def test_keys_of_a_credential() -> None:
    fleet = RedisFleet(redis.asyncio.Redis(), prefix="shop", unencrypted=True)
    key = fleet_key(_provider())
    assert (f"shop:{{{key}}}:token", f"shop:{{{key}}}:lease", f"shop:{{{key}}}:events") == (
        fleet.keys(_provider())
    )


def test_the_configuration_is_checked_at_its_boundaries_and_kept() -> None:
    client = redis.asyncio.Redis()
    positive = "lease_ttl, redis_timeout and poll_interval must be positive"
    zeros: list[dict[str, Any]] = [{"lease_ttl": 0}, {"redis_timeout": 0}, {"poll_interval": 0}]
    for bounds in zeros:
        with pytest.raises(ConfigError) as error:
            RedisFleet(client, unencrypted=True, **bounds)
        assert positive == str(error.value)
    with pytest.raises(ConfigError) as error:
        RedisFleet(client, unencrypted=True, clock_tolerance=-0.001)
    assert "clock_tolerance must not be negative" == str(error.value)
    for prefix in ("a}b", "a{b"):
        with pytest.raises(ConfigError) as error:
            RedisFleet(client, unencrypted=True, prefix=prefix)
        assert "prefix must not hold '{' or '}' (the keys' hash tag is the fleet key)" == str(
            error.value
        )
    with pytest.raises(ConfigError) as error:
        RedisFleet(client)
    assert (
        "RedisFleet needs an encryption_key (a Fernet key); to store tokens in plain text, "
        "which lets anyone with Redis write access substitute tokens, pass unencrypted=True"
    ) == str(error.value)
    with pytest.raises(ConfigError) as error:
        RedisFleet(client, encryption_key=Fernet.generate_key(), unencrypted=True)
    assert "give either an encryption_key or unencrypted=True, not both" == str(error.value)
    with pytest.raises(ConfigError) as error:
        RedisFleet(client, encryption_key=b"not a key")
    assert "encryption_key must be a Fernet key (Fernet.generate_key())" == str(error.value)

    def wall() -> float:
        return NOW

    fleet = RedisFleet(
        client,
        unencrypted=True,
        lease_ttl=0.001,
        redis_timeout=0.002,
        poll_interval=0.003,
        clock_tolerance=0,
        wall_clock=wall,
    )
    assert (client, "aiopay_auth", 0.001, 0.002, 0.003, 0, wall) == (
        fleet.redis,
        fleet.prefix,
        fleet.lease_ttl,
        fleet.redis_timeout,
        fleet.poll_interval,
        fleet.clock_tolerance,
        fleet.wall_clock,
    )
    defaults = RedisFleet(client, unencrypted=True)
    assert (15.0, 0.5, 0.05, 1.0) == (
        defaults.lease_ttl,
        defaults.redis_timeout,
        defaults.poll_interval,
        defaults.clock_tolerance,
    )


def test_stored_tokens_are_encrypted_with_the_key_and_refused_with_another() -> None:
    key = Fernet.generate_key()
    fleet = RedisFleet(redis.asyncio.Redis(), encryption_key=key, wall_clock=lambda: NOW)
    entry = entry_from_json(_raw(), wall=NOW, tolerance=1.0)
    sealed = fleet.encode(entry)
    assert b"stored-token" not in sealed
    assert json.loads(Fernet(key).decrypt(sealed)) == attrs.asdict(entry)
    assert entry == fleet.read(sealed)
    other = RedisFleet(
        redis.asyncio.Redis(), encryption_key=Fernet.generate_key(), wall_clock=lambda: NOW
    )
    with pytest.raises(EntryRefused) as refused:
        other.read(sealed)
    assert "stored token does not decrypt with this key" == str(refused.value)
    assert other.decode(sealed) is None
    plain = RedisFleet(redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: NOW)
    assert entry_to_json(entry) == plain.encode(entry)
    # The reader's own wall clock and tolerance decide.
    late = RedisFleet(redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: NOW + 100)
    assert late.decode(plain.encode(entry)) is None
    strict = RedisFleet(
        redis.asyncio.Redis(), unencrypted=True, wall_clock=lambda: NOW, clock_tolerance=0
    )
    assert strict.decode(_raw(issued_wall=NOW + 0.5)) is None
    assert plain.decode(_raw(issued_wall=NOW + 0.5)) is not None


def test_a_cluster_announces_with_spublish() -> None:
    single = redis.asyncio.Redis()
    cluster = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=1)
    assert (False, "PUBLISH") == (is_cluster(single), publish_command(single))
    assert (True, "SPUBLISH") == (is_cluster(cluster), publish_command(cluster))
    # The store script is handed the cluster's command.
    assert "SPUBLISH" == RedisFleet(cluster, unencrypted=True)._publish
    assert "PUBLISH" == RedisFleet(single, unencrypted=True)._publish
