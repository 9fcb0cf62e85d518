"""Property tests: whatever a fleet finds stored in Redis, it is a usable token or absent.

The bytes under a credential's token key are hypothesis-generated: JSON
entries whose every field may have any JSON type or value, arbitrary bytes,
the same encrypted with the fleet's key, or with another key. They are read
by :meth:`RedisFleet.read`, the one path by which ``SharedTokenSource`` takes
what Redis holds (``_load`` catches only ``EntryRefused``: any other exception
would crash a refresh). The only outcomes allowed are a token usable now,
never living past the stored expiry nor longer than a provider's answer
may, or an ``EntryRefused`` whose printable message quotes no token.
"""

from __future__ import annotations

import json
import math

import pytest
import redis.asyncio
from cryptography.fernet import Fernet
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiopay_auth._oauth import _TOKEN_TEXT, MAX_LIFETIME, MIN_LIFETIME
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.fleet._entry import EntryRefused


NOW = 1_700_000_000.0  # this host's wall clock
CLOCK = 5_000.0  # this host's monotonic clock
TOLERANCE = 1.0
KEY = Fernet.generate_key()
OTHER_KEY = Fernet.generate_key()
STORED_TOKEN = "stored-Token-9f3a"
STORED_REFRESH = "stored-Refresh-77b1"

SETTINGS = settings(max_examples=400, deadline=None)

texts = st.text(max_size=20) | st.sampled_from(
    [STORED_TOKEN, STORED_REFRESH, "a b", "a\r\nX-Injected: 1", "", "\x1b[2J\u202e"]
)
numbers = (
    st.integers(-(10**20), 10**20)
    | st.floats()
    | st.sampled_from([10**400, -(10**400), 0, 0.1, 0.2, True, False])
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
)
# A wall time near now (believable), or anything at all.
walls = st.floats(NOW - 2 * MAX_LIFETIME, NOW + 2 * MAX_LIFETIME) | st.sampled_from(
    [NOW, NOW + TOLERANCE, NOW + TOLERANCE + 1e-6, NOW - MIN_LIFETIME]
)
field_values = {
    "access_token": st.sampled_from([STORED_TOKEN]) | json_values,
    "token_type": st.sampled_from(["Bearer", "bearer", "BEARER", "mac"]) | json_values,
    "issued_wall": walls | json_values,
    "expires_wall": walls | json_values,
    "refresh_token": st.sampled_from([STORED_REFRESH, None, ""]) | json_values,
    "scope": st.none() | json_values,
}


def _mutated(base: dict[str, object], changes: dict[str, object], dropped: list[str]) -> bytes:
    entry = {**base, **changes}
    for name in dropped:
        entry.pop(name, None)
    return json.dumps(entry).encode()


# A believable entry with a few fields changed to anything, or dropped: most
# examples are near the boundary between believed and refused.
believable = st.builds(
    lambda token, kind, issued, lifetime, refresh, scope: {
        "access_token": token,
        "token_type": kind,
        "issued_wall": issued,
        "expires_wall": issued + lifetime,
        "refresh_token": refresh,
        "scope": scope,
    },
    st.sampled_from([STORED_TOKEN, "a b", "a\r\nX-Injected: 1", "tok\x7f"]),
    st.sampled_from(["Bearer", "bearer", "mac"]),
    st.floats(NOW - 30, NOW + 2 * TOLERANCE),  # across the clock tolerance
    st.floats(0, 120) | st.sampled_from([MIN_LIFETIME, 2 * MAX_LIFETIME, 10**9]),
    st.sampled_from([STORED_REFRESH, None, ""]),
    st.none() | st.just("pay"),
)
changes = st.lists(st.sampled_from(list(field_values)), max_size=2, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: field_values[name] for name in names})
)
entries = st.builds(
    _mutated, believable, changes, st.lists(st.sampled_from(list(field_values)), max_size=1)
)
plains = (
    entries | st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), json_values)
)


def fleet(key: bytes | None) -> RedisFleet:
    # The client is never used: reading a stored entry does no I/O.
    return RedisFleet(
        redis.asyncio.Redis(),
        encryption_key=key,
        unencrypted=key is None,
        clock_tolerance=TOLERANCE,
        wall_clock=lambda: NOW,
    )


PLAIN, ENCRYPTED = fleet(None), fleet(KEY)
stored = st.one_of(
    plains.map(lambda raw: (PLAIN, raw)),
    plains.map(lambda raw: (ENCRYPTED, Fernet(KEY).encrypt(raw))),
    plains.map(lambda raw: (ENCRYPTED, Fernet(OTHER_KEY).encrypt(raw))),
    plains.map(lambda raw: (ENCRYPTED, raw)),  # not encrypted at all
)


def _valid(**fields: object) -> bytes:
    entry = {
        "access_token": STORED_TOKEN,
        "token_type": "Bearer",
        "issued_wall": NOW - 5,
        "expires_wall": NOW + 25,
        "refresh_token": STORED_REFRESH,
        "scope": "pay",
    }
    entry.update(fields)
    return json.dumps(entry).encode()


@SETTINGS
@given(found=stored)
@example(found=(PLAIN, _valid()))
@example(found=(ENCRYPTED, Fernet(KEY).encrypt(_valid())))
@example(found=(PLAIN, _valid(issued_wall=NOW + TOLERANCE, expires_wall=NOW + TOLERANCE + 0.2)))
@example(found=(PLAIN, _valid(issued_wall=-1e308, expires_wall=1e308)))
@example(found=(PLAIN, _valid(issued_wall=NOW - 10 * 365 * 86400, expires_wall=NOW + 1e9)))
@example(found=(PLAIN, _valid(expires_wall=NOW + 1e-9)))
@example(found=(PLAIN, _valid(issued_wall=NOW + 1.5, expires_wall=NOW + 30)))
@example(found=(PLAIN, b"NaN"))
@example(found=(PLAIN, b"\xff\xfe{"))
def test_a_stored_entry_is_a_usable_token_or_absent(found: tuple[RedisFleet, bytes]) -> None:
    store, raw = found
    try:
        entry = store.read(raw)
    except EntryRefused as refused:  # absent: the lease holder fetches and overwrites it
        message = str(refused)
        assert message.isprintable(), message
        assert STORED_TOKEN not in message
        assert STORED_REFRESH not in message
        return
    token = entry.to_token(clock=CLOCK, wall=NOW)
    assert _TOKEN_TEXT.fullmatch(token.access_token)
    assert "bearer" == token.token_type.lower()
    # Usable now, and never past what the entry says nor longer than a provider's answer may.
    assert token.remaining(CLOCK) > 0
    assert token.remaining(CLOCK) <= entry.expires_wall - NOW + 1e-6
    assert math.isfinite(token.expires_at)
    assert token.lifetime <= MAX_LIFETIME + TOLERANCE + 1e-6
    assert entry.expires_wall - entry.issued_wall >= MIN_LIFETIME - 1e-9
    assert entry.issued_wall <= NOW + TOLERANCE
    assert token.issued_at <= CLOCK
    # What was believed is what was stored (the expiry cut to a day at most).
    data = json.loads(raw if store is PLAIN else Fernet(KEY).decrypt(raw))
    assert data["access_token"] == token.access_token
    assert (data.get("refresh_token") or None) == (
        None if token.refresh_token is None else token.refresh_token.reveal()
    )
    assert STORED_TOKEN not in repr(entry) + repr(token)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_valid_entry_is_believed(key: bytes | None) -> None:
    # The property above is not vacuous: a well-formed entry is a token.
    store = fleet(key)
    raw = _valid() if key is None else Fernet(key).encrypt(_valid())
    token = store.read(raw).to_token(clock=CLOCK, wall=NOW)
    assert STORED_TOKEN == token.access_token
    assert 25.0 == pytest.approx(token.remaining(CLOCK))
