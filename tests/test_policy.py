"""Tests of the refresh and backoff arithmetic (``aiopay_auth._policy``)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiopay_auth._policy import RefreshPolicy
from aiopay_auth.exceptions import ConfigError


DEFAULT = RefreshPolicy()


class FixedRandom(random.Random):
    """A ``Random`` whose ``random()`` always returns one value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


LOW = FixedRandom(0.0)
HIGH = FixedRandom(math.nextafter(1.0, 0.0))  # the largest value random() can return


# ---------------------------------------------------------------------------
# margin


@pytest.mark.parametrize(
    ("lifetime", "expected"),
    [
        # min(max(lifetime * 0.25, 5), 300, lifetime * 0.5)
        pytest.param(1, 0.5, id="1s-half"),
        pytest.param(4, 2.0, id="4s-half"),
        pytest.param(10, 5.0, id="10s-floor-equals-half"),
        pytest.param(20, 5.0, id="20s-floor"),
        pytest.param(30, 7.5, id="30s-fraction"),
        pytest.param(59, 14.75, id="59s-fraction"),
        pytest.param(1200, 300.0, id="20min-fraction-equals-cap"),
        pytest.param(3600, 300.0, id="1h-cap"),
        pytest.param(86400, 300.0, id="24h-cap"),
    ],
)
def test_margin_default_formula(lifetime: float, expected: float) -> None:
    margin = DEFAULT.margin(lifetime)
    assert expected == margin
    assert 0 < margin < lifetime  # the refresh point is strictly before expiry


def test_59_second_token_does_not_get_a_60_second_margin() -> None:
    assert 14.75 == DEFAULT.margin(59)
    assert 59 - 14.75 == DEFAULT.refresh_delay(issued_at=0.0, expires_at=59.0, now=0.0, rng=LOW)


def test_documented_refresh_points() -> None:
    # The docstring promises: 1 s token after 0.5 s, 30 s token after 22.5 s,
    # 1 h and 24 h tokens 5 minutes before expiry.
    delays = {
        lifetime: DEFAULT.refresh_delay(issued_at=0.0, expires_at=lifetime, now=0.0, rng=LOW)
        for lifetime in (1.0, 30.0, 3600.0, 86400.0)
    }
    assert {1.0: 0.5, 30.0: 22.5, 3600.0: 3300.0, 86400.0: 86100.0} == delays


@pytest.mark.parametrize(
    ("policy", "lifetime", "expected"),
    [
        pytest.param(RefreshPolicy(min_margin=60), 100, 50.0, id="floor-above-half"),
        pytest.param(RefreshPolicy(max_margin=10), 3600, 10.0, id="small-cap"),
        pytest.param(RefreshPolicy(margin_fraction=0.0), 1000, 5.0, id="floor-only"),
        pytest.param(RefreshPolicy(margin_fraction=0.9), 1000, 300.0, id="big-fraction-capped"),
        pytest.param(
            RefreshPolicy(margin_fraction=0.9, max_margin=10_000), 1000, 500.0, id="half-bound"
        ),
    ],
)
def test_margin_custom_policy(policy: RefreshPolicy, lifetime: float, expected: float) -> None:
    assert expected == policy.margin(lifetime)


# ---------------------------------------------------------------------------
# refresh_delay


@pytest.mark.parametrize("lifetime", [1.0, 30.0, 59.0, 3600.0, 86400.0])
@pytest.mark.parametrize("seed", range(25))
def test_refresh_delay_jitter_bounds(lifetime: float, seed: int) -> None:
    issued_at, now = 500.0, 500.0
    expires_at = issued_at + lifetime
    margin = DEFAULT.margin(lifetime)
    unjittered = expires_at - margin - now
    earliest = expires_at - margin * (1 + DEFAULT.jitter) - now

    delay = DEFAULT.refresh_delay(
        issued_at=issued_at, expires_at=expires_at, now=now, rng=random.Random(seed)
    )

    assert delay <= unjittered  # jitter only ever moves the refresh earlier
    assert delay >= earliest  # by at most jitter x margin
    assert delay >= 0
    assert now + delay < expires_at


@pytest.mark.parametrize(
    ("rng", "expected"),
    [
        pytest.param(LOW, 3300.0, id="no-jitter"),
        pytest.param(FixedRandom(0.5), 3600 - 300 * 1.05, id="half-jitter"),
    ],
)
def test_refresh_delay_exact(rng: random.Random, expected: float) -> None:
    assert expected == DEFAULT.refresh_delay(issued_at=0.0, expires_at=3600.0, now=0.0, rng=rng)


def test_refresh_delay_counts_from_now() -> None:
    delay = DEFAULT.refresh_delay(issued_at=0.0, expires_at=3600.0, now=1000.0, rng=LOW)
    assert 2300.0 == delay


@pytest.mark.parametrize("now", [3300.0, 3500.0, 3600.0, 10_000.0])
def test_refresh_delay_is_zero_once_the_point_has_passed(now: float) -> None:
    assert 0.0 == DEFAULT.refresh_delay(issued_at=0.0, expires_at=3600.0, now=now, rng=HIGH)


def test_refresh_delay_without_jitter_is_deterministic() -> None:
    policy = RefreshPolicy(jitter=0.0)
    delays = {
        policy.refresh_delay(issued_at=0.0, expires_at=3600.0, now=0.0, rng=random.Random(seed))
        for seed in range(20)
    }
    assert {3300.0} == delays


def test_refresh_delay_jitter_spreads_a_fleet() -> None:
    delays = {
        DEFAULT.refresh_delay(issued_at=0.0, expires_at=3600.0, now=0.0, rng=random.Random(seed))
        for seed in range(20)
    }
    assert len(delays) > 10
    assert min(delays) >= 3600 - 330
    assert max(delays) <= 3300


# ---------------------------------------------------------------------------
# backoff


@pytest.mark.parametrize(
    ("attempt", "expected_base"),
    [
        pytest.param(1, 0.5, id="1"),
        pytest.param(2, 1.0, id="2"),
        pytest.param(3, 2.0, id="3"),
        pytest.param(4, 4.0, id="4"),
        pytest.param(5, 8.0, id="5"),
        pytest.param(6, 16.0, id="6"),
        pytest.param(7, 30.0, id="7-capped"),
        pytest.param(8, 30.0, id="8-capped"),
        pytest.param(1000, 30.0, id="1000-capped"),
        pytest.param(10**9, 30.0, id="huge-attempt"),
        pytest.param(0, 0.5, id="0-treated-as-1"),
        pytest.param(-3, 0.5, id="negative-treated-as-1"),
    ],
)
def test_backoff_exponential_with_equal_jitter(attempt: int, expected_base: float) -> None:
    assert expected_base == DEFAULT.backoff(attempt, rng=FixedRandom(1.0))
    assert expected_base / 2 == DEFAULT.backoff(attempt, rng=LOW)
    for seed in range(20):
        delay = DEFAULT.backoff(attempt, rng=random.Random(seed))
        assert expected_base / 2 <= delay <= expected_base


def test_backoff_grows_until_the_cap() -> None:
    bases = [DEFAULT.backoff(attempt, rng=FixedRandom(1.0)) for attempt in range(1, 10)]
    assert [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0] == bases


def test_backoff_with_huge_multiplier_stays_capped() -> None:
    policy = RefreshPolicy(backoff_multiplier=1e10)
    assert 30.0 == policy.backoff(100, rng=FixedRandom(1.0))


@pytest.mark.parametrize(
    ("retry_after", "attempt", "expected"),
    [
        pytest.param(10.0, 1, 10.0, id="longer-than-backoff"),
        pytest.param(0.1, 4, 4.0, id="shorter-than-backoff"),
        pytest.param(0.0, 1, 0.5, id="zero"),
        pytest.param(120.0, 1, 120.0, id="at-cap"),
        pytest.param(1000.0, 1, 120.0, id="capped"),
        pytest.param(math.inf, 1, 120.0, id="infinite-capped"),
    ],
)
def test_backoff_honours_retry_after(retry_after: float, attempt: int, expected: float) -> None:
    assert expected == DEFAULT.backoff(attempt, rng=FixedRandom(1.0), retry_after=retry_after)


def test_backoff_retry_after_is_a_floor_for_any_jitter() -> None:
    for seed in range(20):
        delay = DEFAULT.backoff(1, rng=random.Random(seed), retry_after=7.0)
        assert 7.0 == delay


@pytest.mark.parametrize("attempt", [1, 2, 10, 1000])
def test_backoff_unhealable_uses_its_cadence(attempt: int) -> None:
    assert 60.0 == DEFAULT.backoff(attempt, rng=FixedRandom(1.0), retryable=False)
    assert 30.0 == DEFAULT.backoff(attempt, rng=LOW, retryable=False)
    for seed in range(10):
        assert 30.0 <= DEFAULT.backoff(attempt, rng=random.Random(seed), retryable=False) <= 60.0


def test_backoff_unhealable_still_honours_retry_after() -> None:
    assert 120.0 == DEFAULT.backoff(1, rng=LOW, retry_after=500.0, retryable=False)
    assert 30.0 == DEFAULT.backoff(1, rng=LOW, retry_after=5.0, retryable=False)


def test_backoff_custom_policy() -> None:
    policy = RefreshPolicy(backoff_initial=1.0, backoff_multiplier=3.0, backoff_max=20.0)
    bases = [policy.backoff(attempt, rng=FixedRandom(1.0)) for attempt in range(1, 6)]
    assert [1.0, 3.0, 9.0, 20.0, 20.0] == bases


# ---------------------------------------------------------------------------
# a transient failure is retried no later than halfway to the served token's expiry


@pytest.mark.parametrize(
    ("attempt", "remaining", "expected"),
    [
        pytest.param(5, 2.0, 1.0, id="backoff-8s-brought-in-to-half-of-2s"),
        pytest.param(1, 0.6, 0.3, id="backoff-0.5s-brought-in-to-half-of-0.6s"),
        pytest.param(7, 50.0, 25.0, id="backoff-30s-brought-in-to-half-of-50s"),
        pytest.param(5, 100.0, 8.0, id="half-is-later-than-the-backoff"),
        pytest.param(5, 0.1, 0.1, id="never-sooner-than-the-floor"),
        pytest.param(5, 0.0, 8.0, id="expired-token-ignored"),
        pytest.param(5, -3.0, 8.0, id="negative-ignored"),
        pytest.param(5, None, 8.0, id="no-token-served"),
    ],
)
def test_backoff_retries_no_later_than_halfway_to_expiry(
    attempt: int, remaining: float | None, expected: float
) -> None:
    assert expected == DEFAULT.backoff(attempt, rng=FixedRandom(1.0), remaining=remaining)


def test_halfway_rule_floor_is_min_fetch_interval() -> None:
    policy = RefreshPolicy(min_fetch_interval=0.25)
    assert 0.25 == policy.backoff(5, rng=FixedRandom(1.0), remaining=0.1)


def test_halfway_rule_yields_to_retry_after_and_to_unhealable_errors() -> None:
    # The provider's Retry-After still wins...
    assert 3.0 == DEFAULT.backoff(1, rng=FixedRandom(1.0), retry_after=3.0, remaining=2.0)
    # ...and an error that cannot heal keeps its slow cadence.
    assert 60.0 == DEFAULT.backoff(5, rng=FixedRandom(1.0), retryable=False, remaining=2.0)


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 10**6),
    seed=st.integers(0, 2**64),
    remaining=st.floats(1e-6, 1e6),
)
def test_backoff_never_outlives_half_the_served_token(
    attempt: int, seed: int, remaining: float
) -> None:
    delay = DEFAULT.backoff(attempt, rng=random.Random(seed), remaining=remaining)
    assert delay <= max(remaining / 2, DEFAULT.min_fetch_interval)
    assert delay >= min(DEFAULT.min_fetch_interval, DEFAULT.backoff_initial / 2)


# ---------------------------------------------------------------------------
# the floor between two token requests


def test_min_fetch_interval_default_is_documented() -> None:
    assert 0.1 == DEFAULT.min_fetch_interval  # at most 10 token requests a second


@pytest.mark.parametrize(
    ("last_start", "now", "expected"),
    [
        pytest.param(None, 5.0, 0.0, id="first-request"),
        pytest.param(5.0, 5.0, 0.1, id="right-after"),
        pytest.param(5.0, 5.04, 0.06, id="partway"),
        pytest.param(5.0, 5.1, 0.0, id="exactly-at-the-floor"),
        pytest.param(5.0, 9.0, 0.0, id="long-after"),
    ],
)
def test_fetch_wait_holds_a_request_until_the_floor(
    last_start: float | None, now: float, expected: float
) -> None:
    assert expected == pytest.approx(DEFAULT.fetch_wait(last_start=last_start, now=now))


# ---------------------------------------------------------------------------
# validation

POSITIVE_FIELDS = [
    "min_margin",
    "max_margin",
    "backoff_initial",
    "backoff_max",
    "retry_after_max",
    "unhealable_retry",
    "fetch_timeout",
    "wait_timeout",
    "min_fetch_interval",
]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *(
            pytest.param(field, value, id=f"{field}={value}")
            for field in POSITIVE_FIELDS
            for value in (0.0, -1.0, math.nan)
        ),
        *(
            pytest.param("backoff_multiplier", value, id=f"backoff_multiplier={value}")
            for value in (0.5, 0.0, -1.0, math.nan)
        ),
        *(
            pytest.param(field, value, id=f"{field}={value}")
            for field in ("margin_fraction", "jitter")
            for value in (-0.01, 1.0, 1.5, math.nan)
        ),
    ],
)
def test_invalid_policy_values_raise_config_error(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=rf"RefreshPolicy\.{field} must be") as caught:
        RefreshPolicy(**kwargs)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("margin_fraction", 0.0, id="margin_fraction=0"),
        pytest.param("margin_fraction", 0.99, id="margin_fraction=0.99"),
        pytest.param("jitter", 0.0, id="jitter=0"),
        pytest.param("min_margin", 1e-9, id="tiny-min_margin"),
        pytest.param("backoff_max", 1e9, id="huge-backoff_max"),
    ],
)
def test_valid_edge_values_accepted(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    assert value == getattr(RefreshPolicy(**kwargs), field)


# ---------------------------------------------------------------------------
# properties

policies = st.builds(
    RefreshPolicy,
    margin_fraction=st.floats(0.0, 0.999),
    min_margin=st.floats(1e-3, 1e4),
    max_margin=st.floats(1e-3, 1e4),
    jitter=st.floats(0.0, 0.999),
)
lifetimes = st.one_of(st.floats(1e-6, 1e6), st.integers(1, 10**6).map(float))


@settings(max_examples=300, deadline=None)
@given(lifetime=lifetimes, seed=st.integers(0, 2**64), issued_at=st.floats(0.0, 1e5))
def test_refresh_happens_before_expiry_default_policy(
    lifetime: float, seed: int, issued_at: float
) -> None:
    expires_at = issued_at + lifetime
    delay = DEFAULT.refresh_delay(
        issued_at=issued_at, expires_at=expires_at, now=issued_at, rng=random.Random(seed)
    )
    assert 0 <= delay <= lifetime
    assert issued_at + delay < expires_at


@settings(max_examples=300, deadline=None)
@given(policy=policies, lifetime=lifetimes, seed=st.integers(0, 2**64))
def test_refresh_happens_before_expiry_any_policy(
    policy: RefreshPolicy, lifetime: float, seed: int
) -> None:
    delay = policy.refresh_delay(
        issued_at=0.0, expires_at=lifetime, now=0.0, rng=random.Random(seed)
    )
    margin = policy.margin(lifetime)
    assert 0 < margin <= lifetime / 2
    assert 0 <= delay < lifetime
    assert delay <= lifetime - margin


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(-5, 10**6),
    seed=st.integers(0, 2**64),
    retry_after=st.none() | st.floats(0.0, 1e9),
    retryable=st.booleans(),
)
def test_backoff_is_bounded(
    attempt: int, seed: int, retry_after: float | None, retryable: bool
) -> None:
    delay = DEFAULT.backoff(
        attempt, rng=random.Random(seed), retry_after=retry_after, retryable=retryable
    )
    cap = DEFAULT.backoff_max if retryable else DEFAULT.unhealable_retry
    assert 0 < delay <= max(cap, DEFAULT.retry_after_max)
    if retry_after is not None:
        assert delay >= min(retry_after, DEFAULT.retry_after_max)


@pytest.mark.parametrize(
    ("multiplier", "expected"),
    [
        pytest.param(1.0, [0.5, 0.5, 0.5], id="1-keeps-the-delay-constant"),
        pytest.param(1.5, [0.5, 0.75, 1.125], id="1.5-grows-by-half"),
    ],
)
def test_backoff_multiplier_boundary_is_accepted(multiplier: float, expected: list[float]) -> None:
    policy = RefreshPolicy(backoff_multiplier=multiplier)
    assert expected == [policy.backoff(attempt, rng=FixedRandom(1.0)) for attempt in (1, 2, 3)]
