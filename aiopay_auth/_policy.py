"""When to refresh, how long to back off, how long to wait: pure arithmetic."""

from __future__ import annotations

import random

import attrs

from ._check import number
from .exceptions import ConfigError


__all__ = ["RefreshPolicy"]


def _positive(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    number(f"RefreshPolicy.{attribute.name}", value)


def _at_least_one(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    what = f"RefreshPolicy.{attribute.name}"
    if not number(what, value) >= 1:
        msg = f"{what} must be at least 1, not {value!r}"
        raise ConfigError(msg)


def _fraction(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    what = f"RefreshPolicy.{attribute.name}"
    if not 0 <= number(what, value, positive=False) < 1:
        msg = f"{what} must be in [0, 1), not {value!r}"
        raise ConfigError(msg)


@attrs.frozen(kw_only=True)
class RefreshPolicy:
    """Timing rules for refreshing tokens and for recovering from failures.

    A token is refreshed when its remaining life falls to the *margin*::

        margin = min(max(lifetime * margin_fraction, min_margin),
                     max_margin,
                     lifetime * 0.5)

    With the defaults a 1-second token is refreshed after 0.5 s, a
    30-second one after 22.5 s, a one-hour one 5 minutes before expiry
    and a 24-hour one 5 minutes before expiry. Each refresh is then moved
    earlier by a random part of up to ``jitter`` of the margin, so that a
    fleet of workers does not refresh in lockstep. Refreshing is never
    later than the margin.

    Failed fetches are retried after an exponential backoff with "equal
    jitter" (a random delay between half and all of
    ``backoff_initial * backoff_multiplier ** (attempt - 1)``, capped at
    ``backoff_max``), never sooner than the provider's ``Retry-After``
    (itself capped at ``retry_after_max``). Errors that cannot heal
    (``invalid_client`` …) are retried every ``unhealable_retry`` seconds.

    Whatever a server answers (a tiny lifetime, the same token again,
    errors with ``Retry-After: 0``, 401s on every request), two token
    requests of one provider never start less than ``min_fetch_interval``
    apart: at most ``1 / min_fetch_interval`` token requests per second
    (10 with the default).

    Attributes:
        margin_fraction: Part of the lifetime left when refreshing.
        min_margin: Floor of the margin, in seconds.
        max_margin: Cap of the margin, in seconds.
        jitter: Up to this part of the margin is added at random.
        backoff_initial: First retry delay after a failure, in seconds.
        backoff_multiplier: Growth of the delay per failed attempt.
        backoff_max: Cap of the retry delay, in seconds.
        retry_after_max: Cap on a provider's ``Retry-After``, in seconds.
        unhealable_retry: Retry cadence for errors that cannot heal.
        fetch_timeout: Bound on one token request, in seconds.
        wait_timeout: How long a request waits for a token when none is
            usable before it fails with :class:`~aiopay_auth.TokenUnavailableError`.
        min_fetch_interval: The least time, in seconds, between the starts
            of two token requests of one provider: the floor under every
            other delay.
    """

    margin_fraction: float = attrs.field(default=0.25, validator=_fraction)
    min_margin: float = attrs.field(default=5.0, validator=_positive)
    max_margin: float = attrs.field(default=300.0, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    backoff_initial: float = attrs.field(default=0.5, validator=_positive)
    backoff_multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    backoff_max: float = attrs.field(default=30.0, validator=_positive)
    retry_after_max: float = attrs.field(default=120.0, validator=_positive)
    unhealable_retry: float = attrs.field(default=60.0, validator=_positive)
    fetch_timeout: float = attrs.field(default=10.0, validator=_positive)
    wait_timeout: float = attrs.field(default=30.0, validator=_positive)
    min_fetch_interval: float = attrs.field(default=0.1, validator=_positive)

    def margin(self, lifetime: float) -> float:
        """Seconds before expiry at which a token of *lifetime* is refreshed (before jitter)."""
        wanted = max(lifetime * self.margin_fraction, self.min_margin)
        return min(wanted, self.max_margin, lifetime * 0.5)

    def refresh_delay(
        self, *, issued_at: float, expires_at: float, now: float, rng: random.Random
    ) -> float:
        """Seconds from *now* until a token should be refreshed.

        Args:
            issued_at: When the token was requested (monotonic).
            expires_at: When it expires (monotonic).
            now: The current monotonic time.
            rng: Source of the jitter.

        Returns:
            A delay, zero when the refresh point has passed.
        """
        margin = self.margin(expires_at - issued_at)
        margin *= 1.0 + self.jitter * rng.random()
        return max(0.0, expires_at - margin - now)

    def backoff(
        self,
        attempt: int,
        *,
        rng: random.Random,
        retry_after: float | None = None,
        retryable: bool = True,
        remaining: float | None = None,
    ) -> float:
        """Seconds to wait before the next attempt after *attempt* failures in a row.

        Args:
            attempt: How many attempts have failed in a row (1 for the first).
            rng: Source of the jitter.
            retry_after: The provider's ``Retry-After``, if it sent one.
            retryable: False for errors that cannot heal.
            remaining: Seconds of life left in the token still being served,
                if any. A retryable failure is then retried no later than
                halfway to its expiry (never sooner than
                ``min_fetch_interval``), so that a
                short token is not lost to one long backoff; a
                ``Retry-After`` still wins.

        Returns:
            The delay in seconds.
        """
        if not retryable:
            base = self.unhealable_retry
        else:
            exponent = min(max(attempt, 1) - 1, 64)
            try:
                grown = self.backoff_initial * self.backoff_multiplier**exponent
            except OverflowError:  # a large multiplier to the 64th power
                grown = self.backoff_max
            base = min(grown, self.backoff_max)
        delay = base * (0.5 + 0.5 * rng.random())
        if retry_after is not None:
            return max(delay, min(retry_after, self.retry_after_max))
        if retryable and remaining is not None and remaining > 0:
            delay = min(delay, max(remaining / 2, self.min_fetch_interval))
        return delay

    def fetch_wait(self, *, last_start: float | None, now: float) -> float:
        """Seconds to hold a token request so that it starts ``min_fetch_interval`` after the last.

        Args:
            last_start: When the provider's previous token request started
                (monotonic), ``None`` before the first.
            now: The current monotonic time.

        Returns:
            A delay, zero when the request may start now.
        """
        if last_start is None:
            return 0.0
        return max(0.0, last_start + self.min_fetch_interval - now)
