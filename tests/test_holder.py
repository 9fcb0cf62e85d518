"""The token holder on its own, on an injected clock: what readers see, counters, errors.

The holder does no I/O: its refresher (the only writer, through the
holder's writer half) publishes tokens and records failures, readers take
them. These tests play the refresher's part by hand (``publish``,
``record_failure``, ``close`` of :class:`HolderWriter`) and move the clock
themselves, so every time and counter they assert is exact.
"""

from __future__ import annotations

import logging

import anyio
import attrs
import pytest

from aiopay_auth import (
    HealthState,
    RefreshPolicy,
    Secret,
    Token,
    TokenHolder,
    TokenUnavailableError,
)
from aiopay_auth._holder import RefusalStreak
from aiopay_auth._writer import HolderWriter
from aiopay_auth.exceptions import AuthError, ConfigError, TokenRequestError, TokenResponseError

from .endpoints import make_provider
from .helpers import ManualClock, events


pytestmark = pytest.mark.anyio

NAME = "hostile"  # make_provider's name


def new_holder(clock: ManualClock, **kwargs: object) -> TokenHolder:
    holder = TokenHolder(make_provider("http://127.0.0.1:9"), clock=clock, **kwargs)  # type: ignore[arg-type]
    HolderWriter(holder)
    return holder


def write(holder: TokenHolder) -> HolderWriter:
    """The holder's writer half, through which these tests play the refresher."""
    assert holder._writer is not None
    return holder._writer


def token(clock: ManualClock, name: str = "tok-1", lifetime: float = 10.0) -> Token:
    return Token.bearer(name, issued_at=clock.now, lifetime=lifetime)


def unhealable() -> TokenResponseError:
    return TokenResponseError(
        "invalid_client: client authentication failed",
        provider=NAME,
        status=401,
        error="invalid_client",
    )


def transient() -> TokenResponseError:
    return TokenResponseError("HTTP 503", provider=NAME, status=503, retryable=True)


async def waiter_started() -> None:
    """Let the tasks just started run up to their wait."""
    await anyio.wait_all_tasks_blocked()


# Read through calls: mypy would narrow an attribute across the holder's own changes.
def state(holder: TokenHolder) -> HealthState:
    return holder.state


def current(holder: TokenHolder) -> Token | None:
    return holder.current


def streak(holder: TokenHolder) -> RefusalStreak:
    assert holder.refusing is not None
    return holder.refusing


def last_error(holder: TokenHolder) -> AuthError | ConfigError | None:
    return holder.last_error


async def outcome_of(holder: TokenHolder, timeout: float | None, into: list[object]) -> None:
    """Wait for a token; append it, or the error that ended the wait."""
    try:
        into.append(await holder.get(timeout))
    except TokenUnavailableError as err:
        into.append(err)


# --------------------------------------------------------------------------- reading


async def test_a_usable_token_is_handed_out_at_once_and_no_wait_is_counted() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    served = token(clock)
    write(holder).publish(served)
    assert served is await holder.get()
    assert served is await holder.get(timeout=0.01)
    assert (0, 0.0) == (holder.health().waits, holder.health().max_wait)


async def test_a_token_is_not_usable_from_its_expiry_instant() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    served = token(clock, lifetime=10.0)
    write(holder).publish(served)
    clock.now = served.expires_at - 0.001
    assert served is holder.usable()
    assert "fresh" == state(holder)
    clock.now = served.expires_at
    assert holder.usable() is None
    assert "refreshing" == state(holder)
    assert served is current(holder)  # kept, only not usable
    with pytest.raises(TokenUnavailableError, match="within the wait bound"):
        await holder.get(timeout=0.01)


async def test_waits_and_the_longest_wait_are_counted_on_the_holders_clock() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    async with anyio.create_task_group() as tg:
        got: list[Token] = []

        async def wait() -> None:
            got.append(await holder.get())

        tg.start_soon(wait)
        await waiter_started()
        clock.now += 2.5
        first = token(clock)
        write(holder).publish(first)
    assert [first] == got
    assert (1, 2.5) == (holder.health().waits, holder.health().max_wait)

    holder.invalidate(first)
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await waiter_started()
        clock.now += 1.0  # shorter: the longest stays
        write(holder).publish(token(clock, "tok-2"))
    assert (2, 2.5) == (holder.health().waits, holder.health().max_wait)

    clock.now += 100  # expired
    with pytest.raises(TokenUnavailableError):
        await holder.get(timeout=0.01)  # a wait that fails counts too
    assert 3 == holder.health().waits


async def test_a_waiter_woken_by_a_token_already_expired_waits_on() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    outcome: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome_of, holder, 0.2, outcome)
        await waiter_started()
        write(holder).publish(token(clock, lifetime=-1.0))  # dead on arrival
    assert isinstance(outcome[0], TokenUnavailableError)
    assert "no usable token within the wait bound" == outcome[0].message


async def test_the_timeout_argument_overrides_the_holders_wait_bound() -> None:
    clock = ManualClock()
    holder = new_holder(clock, wait_timeout=30.0)
    with anyio.fail_after(10):  # far below 30 s, far above 0.05 s on a loaded machine
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get(timeout=0.05)
    err = caught.value
    assert "no usable token within the wait bound" == err.message
    assert NAME == err.provider
    assert err.retryable
    assert err.last_error is None
    assert err.__cause__ is None


@pytest.mark.parametrize(("bad", "shown"), [("1", "a str"), (float("nan"), "NaN")])
async def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(
    bad: object, shown: str
) -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    write(holder).publish(token(clock))  # even with a token at hand
    with pytest.raises(ConfigError) as caught:
        await holder.get(bad)  # type: ignore[arg-type]
    assert f"timeout must be a number of seconds, not {shown}" == caught.value.message


async def test_the_holders_wait_bound_applies_without_a_timeout_argument() -> None:
    holder = new_holder(ManualClock(), wait_timeout=0.05)
    with anyio.fail_after(10), pytest.raises(TokenUnavailableError, match="wait bound"):
        await holder.get()


async def test_a_wait_bound_error_names_and_chains_the_last_failure() -> None:
    holder = new_holder(ManualClock())
    last = transient()
    write(holder).record_failure(last)
    with pytest.raises(TokenUnavailableError) as caught:
        await holder.get(timeout=0.01)
    err = caught.value
    assert "no usable token within the wait bound; last failure: HTTP 503" == err.message
    assert err.last_error is last
    assert err.__cause__ is last
    assert err.retryable
    assert NAME == err.provider


async def test_a_retryable_failure_leaves_waiters_waiting_for_the_next_attempt() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    got: list[Token] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            got.append(await holder.get(timeout=5))

        tg.start_soon(wait)
        await waiter_started()
        write(holder).record_failure(TokenRequestError("connection reset", provider=NAME))
        await waiter_started()
        assert not got  # still waiting
        fresh = token(clock)
        write(holder).publish(fresh)
    assert [fresh] == got


async def test_an_unhealable_failure_fails_waiters_at_once_with_its_message() -> None:
    holder = new_holder(ManualClock())
    failure = unhealable()
    outcome: list[object] = []
    with anyio.fail_after(10):  # not the 30 s wait bound
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome_of, holder, None, outcome)
            await waiter_started()
            write(holder).record_failure(failure)
    err = outcome[0]
    assert isinstance(err, TokenUnavailableError)
    assert "invalid_client: client authentication failed" == err.message
    assert NAME == err.provider
    assert err.last_error is failure
    assert err.__cause__ is failure
    assert not err.retryable
    # and any later caller too, at once
    with anyio.fail_after(10), pytest.raises(TokenUnavailableError) as again:
        await holder.get()
    assert again.value.last_error is failure


async def test_an_unhealable_failure_while_a_token_is_served_keeps_serving_it() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    served = token(clock)
    write(holder).publish(served)
    write(holder).record_failure(unhealable())
    assert served is await holder.get()
    assert "degraded" == state(holder)


# --------------------------------------------------------------------------- counters


async def test_failures_are_counted_by_kind_until_a_token_is_published() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    write(holder).record_failure(transient())
    write(holder).record_failure(transient())
    write(holder).record_failure(TokenRequestError("timed out", provider=NAME, timed_out=True))
    stats = holder.health()
    assert (3, 3) == (stats.failures, stats.consecutive_failures)
    assert {"server_error": 2, "timeout": 1} == stats.failures_by_kind
    assert isinstance(last_error(holder), TokenRequestError)
    assert "failing" == state(holder)

    write(holder).publish(token(clock))
    stats = holder.health()
    assert (3, 0) == (stats.failures, stats.consecutive_failures)
    assert last_error(holder) is None
    assert 0 == stats.refreshes  # the first token is not a refresh
    assert "fresh" == state(holder)

    write(holder).record_failure(AuthError("bug", provider=NAME))
    stats = holder.health()
    assert (4, 1) == (stats.failures, stats.consecutive_failures)
    assert {"server_error": 2, "timeout": 1, "unexpected": 1} == stats.failures_by_kind

    write(holder).publish(token(clock, "tok-2"))
    write(holder).publish(token(clock, "tok-3"))
    assert 2 == holder.health().refreshes


async def test_invalidate_drops_only_the_current_token_once() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    first = token(clock)
    assert not holder.invalidate(first)  # never published
    write(holder).publish(first)
    assert holder.invalidate(first)
    assert current(holder) is None
    assert first is holder.latest
    assert not holder.invalidate(first)  # a late 401 for the same token
    second = token(clock, "tok-2")
    write(holder).publish(second)
    assert not holder.invalidate(first)  # a 401 for an older token
    assert second is current(holder)
    assert 1 == holder.health().invalidations
    assert 1 == holder.health().refused_tokens
    clock.now += 1.0  # past the refusal backoff of one token (at most 0.5 s)
    assert holder.invalidate(second)
    assert (2, 2) == (holder.health().invalidations, holder.health().refused_tokens)


async def test_an_invalidation_wakes_the_refresher_at_once() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    served = token(clock)
    write(holder).publish(served)
    with anyio.fail_after(10):  # not the hour it was told to sleep
        async with anyio.create_task_group() as tg:
            tg.start_soon(write(holder).wait_refresh_needed, 3600.0)
            await waiter_started()
            holder.invalidate(served)
    # A new token re-arms it: the next sleep lasts its full delay.
    write(holder).publish(token(clock, "tok-2"))
    with anyio.move_on_after(0.05) as scope:
        await write(holder).wait_refresh_needed(3600.0)
    assert scope.cancelled_caught


async def test_an_invalidation_before_the_refresher_waits_is_not_missed() -> None:
    # The refresher may be busy (a fetch, a log call) when the 401 comes:
    # its next wait returns at once rather than sleep to the refresh point.
    clock = ManualClock()
    holder = new_holder(clock)
    served = token(clock)
    write(holder).publish(served)
    assert holder.invalidate(served)
    with anyio.fail_after(1):
        await write(holder).wait_refresh_needed(3600.0)


async def test_the_last_four_access_tokens_are_recognised_as_issued() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    assert not holder.issued("tok-0")
    for n in range(5):
        write(holder).publish(token(clock, f"tok-{n}"))
    assert [False, True, True, True, True] == [holder.issued(f"tok-{n}") for n in range(5)]


# --------------------------------------------------------------------------- refusal streak


async def test_a_streak_of_refused_tokens_backs_off_and_ends_with_a_normal_refresh(
    records: list[logging.LogRecord],
) -> None:
    clock = ManualClock()
    policy = RefreshPolicy(backoff_initial=2.0, backoff_max=8.0)
    holder = new_holder(clock, policy=policy)
    first = token(clock, "tok-1", lifetime=100.0)
    write(holder).publish(first)
    assert holder.refusal_backoff() == 0.0
    assert holder.invalidate(first)  # the first 401 of a streak: at once
    assert 1 == streak(holder).tokens
    assert 1.0 <= streak(holder).delay <= 2.0  # backoff(1): 2 s, equal jitter
    delay = streak(holder).delay
    assert not holder.backing_off()  # no current token: nothing to back off

    second = token(clock, "tok-2", lifetime=100.0)
    write(holder).publish(second)
    assert delay == pytest.approx(holder.refusal_backoff())
    assert holder.backing_off()
    clock.now += delay / 2
    assert delay / 2 == pytest.approx(holder.refusal_backoff())
    assert holder.backing_off()  # under a second left
    assert not holder.invalidate(second)  # during its backoff: handed to the caller
    assert streak(holder).refused
    assert second is current(holder)
    assert 1 == holder.health().invalidations
    clock.now += delay / 2 + 1e-6  # (a hair past: the sums round differently)
    assert 0.0 == holder.refusal_backoff()
    assert not holder.backing_off()
    assert holder.invalidate(second)  # backoff over: the second refused token
    assert 2 == streak(holder).tokens
    assert 2.0 <= streak(holder).delay <= 4.0  # backoff(2): 4 s
    assert 2 == holder.health().refused_tokens
    delays = [streak(holder).delay]

    third = token(clock, "tok-3", lifetime=100.0)
    write(holder).publish(third)
    health = holder.health()
    assert 2 == health.refusal_streak
    assert streak(holder).delay == pytest.approx(health.refusal_backoff)
    clock.now += 4.001  # past backoff(2), at most 4 s
    assert holder.invalidate(third)
    assert 4.0 <= streak(holder).delay <= 8.0  # backoff(3): 8 s
    delays.append(streak(holder).delay)
    refusing = events(records, "api_refusing_tokens")
    # Logged once at WARNING, from the second token; then at DEBUG.
    assert [logging.WARNING, logging.DEBUG] == [level for level, _ in refusing]
    for n, ((_, fields), delay) in enumerate(zip(refusing, delays, strict=True), start=2):
        assert {"provider": NAME, "refused": n, "backoff": round(delay, 3)} == fields
        assert isinstance(fields["backoff"], float)

    write(holder).publish(token(clock, "tok-4", lifetime=100.0))
    write(holder).publish(token(clock, "tok-5", lifetime=100.0))  # a refresh without a 401
    assert holder.refusing is None
    assert 0 == holder.health().refusal_streak
    assert [(logging.INFO, {"provider": NAME, "refused": 3})] == events(
        records, "api_accepting_tokens"
    )


@pytest.mark.parametrize("refused", [1, 2])
async def test_the_end_of_a_streak_is_logged_from_two_refused_tokens(
    records: list[logging.LogRecord], refused: int
) -> None:
    clock = ManualClock()
    holder = new_holder(clock, policy=RefreshPolicy(backoff_initial=2.0, backoff_max=8.0))
    for n in range(refused):
        served = token(clock, f"tok-{n}", lifetime=100.0)
        write(holder).publish(served)
        clock.now += 4.001  # past any backoff so far
        assert holder.invalidate(served)
    write(holder).publish(token(clock, "tok-a", lifetime=100.0))
    write(holder).publish(token(clock, "tok-b", lifetime=100.0))  # a refresh without a 401
    assert holder.refusing is None
    ended = events(records, "api_accepting_tokens")
    assert ([(logging.INFO, {"provider": NAME, "refused": 2})] if refused == 2 else []) == ended


async def test_the_refusal_backoff_is_logged_to_the_millisecond(
    records: list[logging.LogRecord],
) -> None:
    clock = ManualClock()
    holder = new_holder(clock, policy=RefreshPolicy(backoff_initial=2.0, backoff_max=8.0))
    delays: list[float] = []
    for n in range(8):  # (eight jittered delays: a coarser rounding cannot pass them all)
        served = token(clock, f"tok-{n}", lifetime=100.0)
        write(holder).publish(served)
        clock.now += 8.001  # past any backoff (8 s at most), within the streak (16 s)
        assert holder.invalidate(served)
        delays.append(streak(holder).delay)
    logged = [fields["backoff"] for _, fields in events(records, "api_refusing_tokens")]
    assert [round(delay, 3) for delay in delays[1:]] == logged


async def test_the_backoff_ends_at_its_exact_instant() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    first = token(clock, "tok-1", lifetime=100.0)
    write(holder).publish(first)
    holder.invalidate(first)
    holder._refusing = attrs.evolve(streak(holder), delay=1.0)  # an exact backoff, exact instant
    second = token(clock, "tok-2", lifetime=100.0)
    write(holder).publish(second)
    clock.now += 1.0
    assert not holder.backing_off()
    assert holder.invalidate(second)


async def test_a_token_refused_during_its_backoff_then_refreshed_counts_as_refused() -> None:
    clock = ManualClock()
    holder = new_holder(clock, policy=RefreshPolicy(backoff_initial=2.0, backoff_max=8.0))
    first = token(clock, "tok-1", lifetime=100.0)
    write(holder).publish(first)
    holder.invalidate(first)
    second = token(clock, "tok-2", lifetime=100.0)
    write(holder).publish(second)
    assert not holder.invalidate(second)  # refused during its backoff
    write(holder).publish(token(clock, "tok-3", lifetime=100.0))  # then its refresh point
    assert 2 == streak(holder).tokens
    assert streak(holder).refused is False  # the new token starts clean
    assert 2 == holder.health().refused_tokens
    assert 1 == holder.health().invalidations


async def test_a_refusal_long_after_the_last_starts_a_new_streak() -> None:
    clock = ManualClock()
    policy = RefreshPolicy(backoff_initial=2.0, backoff_max=8.0)
    holder = new_holder(clock, policy=policy)
    first = token(clock, "tok-1", lifetime=100.0)
    write(holder).publish(first)
    holder.invalidate(first)
    second = token(clock, "tok-2", lifetime=100.0)
    write(holder).publish(second)
    clock.now += 2 * policy.backoff_max  # not more: the streak goes on
    assert holder.invalidate(second)
    assert 2 == streak(holder).tokens
    third = token(clock, "tok-3", lifetime=100.0)
    write(holder).publish(third)
    clock.now += 2 * policy.backoff_max + 0.001
    assert holder.invalidate(third)
    assert 1 == streak(holder).tokens  # afresh


# --------------------------------------------------------------------------- closing


async def test_closing_fails_every_waiter_and_later_caller_for_good() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    write(holder).publish(token(clock))
    write(holder).record_failure(transient())  # retryable, but the holder closes
    write(holder).close()
    assert current(holder) is None
    assert "closed" == state(holder)
    with anyio.fail_after(10), pytest.raises(TokenUnavailableError) as caught:
        await holder.get()
    err = caught.value
    assert "the token manager is closed" == err.message
    assert NAME == err.provider
    assert err.retryable is False
    assert isinstance(err.last_error, TokenUnavailableError)
    assert err.last_error.retryable is False
    assert NAME == err.last_error.provider
    assert f"<TokenHolder {NAME!r} closed>" == repr(holder)


async def test_a_wait_that_times_out_on_a_closed_holder_is_not_retryable() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    write(holder).record_failure(transient())
    holder._closed = True  # closing, its error not yet recorded
    with pytest.raises(TokenUnavailableError) as caught:
        await holder.get(timeout=0.01)
    assert not caught.value.retryable


# --------------------------------------------------------------------------- health


async def test_the_state_follows_the_token_and_the_fetches() -> None:
    clock = ManualClock()
    holder = new_holder(clock)
    assert "starting" == state(holder)
    assert f"<TokenHolder {NAME!r} starting>" == repr(holder)
    write(holder).fetching = True
    assert "starting" == state(holder)
    served = token(clock, lifetime=10.0)
    write(holder).publish(served)
    assert "refreshing" == state(holder)  # the refresher has not yet cleared it
    write(holder).fetching = False
    assert "fresh" == state(holder)
    assert f"<TokenHolder {NAME!r} fresh>" == repr(holder)
    write(holder).record_failure(transient())
    assert "degraded" == state(holder)
    clock.now += 10.0
    assert "failing" == state(holder)
    write(holder).publish(token(clock, "tok-2", lifetime=10.0))
    assert "fresh" == state(holder)
    holder.invalidate(current(holder))  # type: ignore[arg-type]
    assert "refreshing" == state(holder)


class SharedStore:
    """A token source that says it shares tokens through a store (``health().store``)."""

    store = "shared"

    async def fetch(self, refresh_token: Secret | None) -> Token:
        raise NotImplementedError


async def test_health_is_an_exact_snapshot_of_state_and_counters() -> None:
    clock = ManualClock()
    holder = TokenHolder(make_provider("http://127.0.0.1:9"), clock=clock)
    writer = HolderWriter(holder, SharedStore())
    start = holder.health()
    assert ("starting", None, None, None) == (
        start.state,
        start.expires_in,
        start.last_error,
        start.last_error_kind,
    )
    served = token(clock, lifetime=10.0)
    write(holder).publish(served)
    for _ in range(7):
        writer.fetch_started()
    holder._requests.recoveries = 2
    holder._requests.unreplayable = 1
    writer.record_failure(transient())
    writer.record_failure(TokenRequestError("timed out", provider=NAME, timed_out=True))
    clock.now += 4.0
    health = holder.health()
    assert "degraded" == health.state
    assert NAME == health.provider
    assert 6.0 == health.expires_in
    assert (7, 2, 2) == (health.fetches, health.failures, health.consecutive_failures)
    assert {"server_error": 1, "timeout": 1} == health.failures_by_kind
    assert (0, 0, 2) == (health.refreshes, health.invalidations, health.recoveries)
    assert (0, 0.0) == (health.waits, health.max_wait)
    assert f"[{NAME}] timed out" == health.last_error
    assert "timeout" == health.last_error_kind
    assert "shared" == health.store
    assert (0, 0, 0.0, 1) == (
        health.refused_tokens,
        health.refusal_streak,
        health.refusal_backoff,
        health.unreplayable,
    )
    # A snapshot: later failures do not change it.
    write(holder).record_failure(transient())
    assert {"server_error": 1, "timeout": 1} == health.failures_by_kind

    clock.now += 10.0
    assert "failing" == holder.health().state
    assert -4.0 == holder.health().expires_in

    holder.invalidate(served)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome_of, holder, 5.0, [])
        await waiter_started()
        clock.now += 1.5
        write(holder).publish(token(clock, "tok-2", lifetime=10.0))
    health = holder.health()
    assert "fresh" == health.state
    assert (1, 1, 1, 1.5) == (
        health.refreshes,
        health.invalidations,
        health.waits,
        health.max_wait,
    )
    assert (1, 1, 0) == (health.refused_tokens, health.refusal_streak, health.failures - 3)
    assert 0 == health.consecutive_failures
    assert health.last_error is None


async def test_a_token_or_a_failure_that_comes_after_the_close_changes_nothing() -> None:
    # A fetch may end in the same turn of the event loop as the close (or a
    # tenant's removal): its token is never served, its error never replaces
    # the close's.
    clock = ManualClock()
    holder = new_holder(clock)
    write(holder).close()
    write(holder).publish(token(clock))
    write(holder).record_failure(transient())
    assert (None, "closed") == (current(holder), state(holder))
    with anyio.fail_after(1), pytest.raises(TokenUnavailableError, match="closed") as caught:
        await holder.get()
    assert not caught.value.retryable


def test_the_holders_attributes_are_read_only_and_it_takes_one_writer() -> None:
    holder = new_holder(ManualClock())
    for name in ("current", "provider", "clock", "fetching", "refusing", "latest", "policy"):
        with pytest.raises(AttributeError, match=f"TokenHolder.{name} is read-only"):
            setattr(holder, name, None)
    with pytest.raises(AttributeError, match="read-only"):
        holder.stats = None  # type: ignore[misc,assignment]
    for name in ("current", "clock", "provider", "_current"):
        with pytest.raises(AttributeError, match=f"^TokenHolder.{name} cannot be deleted$"):
            delattr(holder, name)
    with pytest.raises(
        RuntimeError, match=r"^<TokenHolder 'hostile' starting> already has a writer$"
    ):
        HolderWriter(holder)
