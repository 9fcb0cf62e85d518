"""The lock-free token holder: one writer, any number of readers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio
import attrs

from ._check import wait_bound
from ._health import FailureKind, Health, HealthState, failure_kind
from ._log import log
from ._policy import RefreshPolicy
from ._provider import Provider
from ._token import Token
from .exceptions import (
    AuthError,
    ConfigError,
    TenantRemovedError,
    TokenUnavailableError,
    _without_frames,
)


__all__ = ["ProviderStats", "RefusalStreak", "TokenHolder"]


@attrs.define(kw_only=True)
class ProviderStats:
    """Counters for one provider, readable at any time without I/O.

    Attributes:
        fetches: Token requests sent (successful or not).
        failures: Token requests that failed.
        failures_by_kind: Failures counted by kind (see
            :data:`~aiopay_auth.FailureKind`).
        consecutive_failures: Failures since the last success.
        refreshes: Tokens published after the first one.
        invalidations: 401 answers that invalidated the current token.
        recoveries: Requests resent after a 401 with a fresh token.
        waits: Requests that had to wait for a token.
        max_wait: The longest such wait, in seconds.
        last_error: The latest fetch failure, if any since the last success
            (a :class:`~aiopay_auth.ConfigError` if a custom token source
            raised one).
        store: A shared token store's state (``"shared"``, or ``"local"``
            while it fails and the process fetches alone); ``None`` without
            one.
        refused_tokens: Tokens the API refused (401) for the first time.
        unreplayable: 401 answers handed to the caller without a resend
            because the request's body could not be sent again.
    """

    fetches: int = 0
    failures: int = 0
    failures_by_kind: dict[FailureKind, int] = attrs.Factory(dict)
    consecutive_failures: int = 0
    refreshes: int = 0
    invalidations: int = 0
    recoveries: int = 0
    waits: int = 0
    max_wait: float = 0.0
    last_error: AuthError | ConfigError | None = None
    store: str | None = None
    refused_tokens: int = 0
    unreplayable: int = 0


@attrs.define
class RefusalStreak:
    """Tokens in a row that ended by a 401 rather than by a normal refresh.

    Attributes:
        tokens: How many tokens in a row the API refused (invalidated).
        delay: Seconds the current token must have been current before a
            401 may invalidate it (``policy.backoff(tokens)``, jittered
            once); until then 401s are handed to callers as they are.
        refused: Whether the current token got a 401 during its backoff.
    """

    tokens: int = 0
    delay: float = 0.0
    refused: bool = False


_RECENT = 4  # published access tokens remembered by issued()

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


class TokenHolder:
    """Publishes one provider's current token to any number of readers.

    Its refresher is the only writer. Readers take :attr:`current` (a plain
    attribute: no lock, no await) and check its expiry; only when no usable
    token is there do they ``await`` :meth:`get`, and all of them share the
    one fetch that the refresher has in flight.

    You get a holder from :meth:`TokenManager.add
    <aiopay_auth.TokenManager.add>`; you do not build one yourself.

    Attributes:
        provider: The provider whose token this holds.
        current: The latest token, or ``None`` before the first fetch and
            after an invalidation. It may have expired: check
            :attr:`Token.expires_at <aiopay_auth.Token.expires_at>`
            against :attr:`clock`, or call :meth:`usable`.
        clock: The monotonic clock tokens' times are on.
        stats: Counters for this provider.
        fetching: Whether the refresher has a token request in flight
            (read it; only the refresher sets it).
        refusing: The current streak of tokens ended by a 401, or ``None``
            (read it; see :meth:`invalidate`).
        policy: The manager's :class:`~aiopay_auth.RefreshPolicy`; its
            backoff paces new tokens while the API refuses them.
    """

    __slots__ = (
        "__weakref__",
        "_changed",
        "_closed",
        "_failure",
        "_latest",
        "_recent",
        "_refresh_asked",
        "_refresh_event",
        "_since",
        "clock",
        "current",
        "fetching",
        "policy",
        "provider",
        "refusing",
        "stats",
        "wait_timeout",
    )

    def __init__(
        self,
        provider: Provider,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout: float = 30.0,
        policy: RefreshPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy or RefreshPolicy()
        self.refusing: RefusalStreak | None = None
        self.clock = clock
        self.current: Token | None = None
        self.stats = ProviderStats()
        self.wait_timeout = wait_timeout
        self._latest: Token | None = None
        # A tuple, not a deque: a deque's first block alone is 600 bytes a holder.
        self._recent: tuple[str, ...] = ()
        self._since = 0.0  # when the current token was published
        self.fetching = False
        self._failure: AuthError | ConfigError | None = None
        self._closed = False
        # Events are made by the first waiter, not here: two events (with
        # their waiter queues) were 1.7 KiB of each tenant, most never waited on.
        self._changed: anyio.Event | None = None
        self._refresh_event: anyio.Event | None = None
        self._refresh_asked = False  # a refresh was asked since the last publication

    @property
    def name(self) -> str:
        """The provider's name."""
        return self.provider.name

    @property
    def latest(self) -> Token | None:
        """The last token published, even if since invalidated or expired."""
        return self._latest

    def issued(self, credentials: str) -> bool:
        """Whether *credentials* is one of the last few access tokens published here.

        The last four are kept, so a token replaced a moment ago (and still
        valid at the API) is recognised as ours too.
        """
        return credentials in self._recent

    def usable(self) -> Token | None:
        """Return the current token if it has not expired, else ``None``."""
        token = self.current
        if token is not None and token.expires_at > self.clock():
            return token
        return None

    async def get(self, timeout: float | None = None) -> Token:
        """Return a usable token, waiting for the refresher when there is none.

        Returns at once when the current token is usable. Otherwise waits
        for the fetch in flight; every waiter shares it. Cancelling one
        waiter never disturbs the fetch or the other waiters.

        Args:
            timeout: Most seconds to wait; the holder's ``wait_timeout``
                (from the manager's :class:`~aiopay_auth.RefreshPolicy`)
                when ``None``.

        Returns:
            A token that had not expired when it was returned.

        Raises:
            TokenUnavailableError: The wait timed out, the provider failed
                with an error that cannot heal, or the manager closed. The
                last fetch failure is chained. A removed tenant's holder
                raises its subclass
                :class:`~aiopay_auth.exceptions.TenantRemovedError`.
        """
        if timeout is not None:
            wait_bound("timeout", timeout)
        token = self.usable()
        if token is not None:
            return token
        started = self.clock()
        try:
            with anyio.fail_after(self.wait_timeout if timeout is None else timeout):
                while True:
                    failure = self._failure
                    if failure is not None:
                        raise self._unavailable(failure.message, failure) from failure
                    await self._change().wait()
                    token = self.usable()
                    if token is not None:
                        return token
        except TimeoutError:
            last = self.stats.last_error
            raise self._unavailable(
                "no usable token within the wait bound"
                + (f"; last failure: {last.message}" if last else ""),
                last,
            ) from last
        finally:
            waited = self.clock() - started
            self.stats.waits += 1
            self.stats.max_wait = max(self.stats.max_wait, waited)

    def _unavailable(
        self, message: str, cause: AuthError | ConfigError | None
    ) -> TokenUnavailableError:
        if isinstance(cause, TenantRemovedError):
            return TenantRemovedError(message, provider=self.name)  # each waiter its own
        retryable = cause.retryable if cause is not None else True
        return TokenUnavailableError(
            message, provider=self.name, last_error=cause, retryable=retryable and not self._closed
        )

    def invalidate(self, token: Token) -> bool:
        """Report that *token* was refused (a 401), and ask for a new one.

        Compare-and-signal: only the first report against the token that is
        still current drops it and wakes the refresher; later reports for the
        same token, or for an older one, do nothing.

        The rule is kept on tokens, not on answers: :attr:`refusing` counts
        the tokens in a row that ended by a 401 (*n*). The first 401 of a
        streak invalidates at once. After *n* such tokens, the next one may
        be invalidated only once it has been current for
        ``policy.backoff(n)`` seconds (0.5 s doubling up to 30 s with the
        default policy, equal jitter); until then :meth:`backing_off` is
        true and 401s go to callers as they are, with no resend and no new
        token: at most one token call per backoff, whichever paths or
        answers the API refuses. A token refused during its backoff and
        then replaced at its refresh point counts as refused too. The
        streak ends when a token is replaced by a normal refresh (its
        refresh point reached with no 401 at all), or
        starts afresh when a token is invalidated after being current for
        more than ``2 * policy.backoff_max`` seconds. It is logged once at
        WARNING (``aiopay_auth.api_refusing_tokens``) from its second token,
        and its end at INFO (``aiopay_auth.api_accepting_tokens``).

        Returns:
            Whether this call invalidated the current token.
        """
        if token is not self.current:
            return False
        streak = self.refusing
        if streak is not None:
            age = self.clock() - self._since
            if age < streak.delay:
                streak.refused = True
                return False
            if age > 2 * self.policy.backoff_max:
                streak = None
        if streak is None:
            streak = self.refusing = RefusalStreak()
        self._refused(streak)
        self.current = None
        self.stats.invalidations += 1
        self._ask_refresh()
        return True

    def _refused(self, streak: RefusalStreak) -> None:
        """Count the current token as refused: the streak grows, its backoff too."""
        streak.tokens += 1
        streak.delay = self.policy.backoff(streak.tokens, rng=_RNG)
        streak.refused = False
        self.stats.refused_tokens += 1
        if streak.tokens >= 2:
            emit = log.warning if streak.tokens == 2 else log.debug
            emit(
                "aiopay_auth.api_refusing_tokens",
                provider=self.name,
                refused=streak.tokens,
                backoff=round(streak.delay, 3),
            )

    def backing_off(self) -> bool:
        """Whether 401s now go to callers as they are (see :meth:`invalidate`)."""
        return self.refusal_backoff() > 0.0

    def refusal_backoff(self) -> float:
        """Seconds left before a 401 may invalidate the current token (0: none)."""
        streak = self.refusing
        if streak is None or self.current is None:
            return 0.0
        return max(0.0, self._since + streak.delay - self.clock())

    # --- the writer's side: the refresher and the manager only -------------

    def _publish(self, token: Token) -> None:
        """Make *token* current and wake every waiter (refresher only)."""
        if self._latest is not None:
            self.stats.refreshes += 1
        streak = self.refusing
        if streak is not None and self.current is not None and streak.refused:
            self._refused(streak)  # refreshed, but refused during its backoff
        elif streak is not None and self.current is not None:
            # A normal refresh: this token ended without any 401.
            self.refusing = None
            if streak.tokens >= 2:
                log.info(
                    "aiopay_auth.api_accepting_tokens", provider=self.name, refused=streak.tokens
                )
        self.current = token
        self._latest = token
        self._recent = (*self._recent[1 - _RECENT :], token.access_token)
        self._since = self.clock()
        self._failure = None
        self.stats.last_error = None
        self.stats.consecutive_failures = 0
        self._refresh_asked = False
        self._refresh_event = None
        self._wake()

    def _record_failure(self, error: AuthError | ConfigError) -> None:
        """Note a failed fetch (refresher only).

        An error that cannot heal fails every waiter at once, whatever the
        order of events: when no usable token is left now, or later, when
        the token still served expires or is invalidated; only a published
        token clears it. A retryable error leaves waiters waiting for the
        next attempt, up to their wait bound.
        """
        _without_frames(error)  # kept below: its frames' locals held the raw answer
        stats = self.stats
        stats.failures += 1
        stats.consecutive_failures += 1
        kind = failure_kind(error)
        stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
        stats.last_error = error
        self._failure = None if error.retryable else error
        if self._failure is not None:
            self._wake()

    async def _wait_refresh_needed(self, delay: float) -> None:
        """Sleep *delay* seconds, or less if a token is invalidated (refresher only)."""
        if self._refresh_asked:
            return
        event = self._refresh_event
        if event is None:
            event = self._refresh_event = anyio.Event()
        with anyio.move_on_after(delay):
            await event.wait()

    def _ask_refresh(self) -> None:
        """Wake the refresher's :meth:`_wait_refresh_needed`, now or when it next waits."""
        self._refresh_asked = True
        if self._refresh_event is not None:
            self._refresh_event.set()

    def _rotate(self, provider: Provider) -> None:
        """Fetch with *provider*'s credentials from now on, starting at once (tenants only).

        The current token is still served until the new one is published.
        """
        self.provider = provider
        self._ask_refresh()

    def _close(self, error: TokenUnavailableError | None = None) -> None:
        """Fail every present and future waiter with *error*: the manager is closing."""
        self._closed = True
        self.current = None
        self._failure = error or TokenUnavailableError(
            "the token manager is closed", provider=self.name, retryable=False
        )
        self._wake()

    @property
    def state(self) -> HealthState:
        """The provider's state (see :data:`~aiopay_auth.HealthState`)."""
        if self._closed:
            return "closed"
        usable = self.usable() is not None
        if self.stats.last_error is not None:
            return "degraded" if usable else "failing"
        if not usable:
            return "starting" if self._latest is None else "refreshing"
        return "refreshing" if self.fetching else "fresh"

    def health(self) -> Health:
        """A snapshot of state and counters; no I/O, no await."""
        stats, token, last = self.stats, self.current, self.stats.last_error
        return Health(
            provider=self.name,
            state=self.state,
            expires_in=None if token is None else token.expires_at - self.clock(),
            fetches=stats.fetches,
            failures=stats.failures,
            failures_by_kind=dict(stats.failures_by_kind),
            consecutive_failures=stats.consecutive_failures,
            refreshes=stats.refreshes,
            invalidations=stats.invalidations,
            recoveries=stats.recoveries,
            waits=stats.waits,
            max_wait=stats.max_wait,
            last_error=None if last is None else str(last),
            last_error_kind=None if last is None else failure_kind(last),
            store=stats.store,
            refused_tokens=stats.refused_tokens,
            refusal_streak=0 if self.refusing is None else self.refusing.tokens,
            refusal_backoff=self.refusal_backoff(),
            unreplayable=stats.unreplayable,
        )

    def _change(self) -> anyio.Event:
        """The event the next change sets (:meth:`_wake`); made by the first waiter."""
        changed = self._changed
        if changed is None:
            changed = self._changed = anyio.Event()
        return changed

    def _wake(self) -> None:
        """Wake everything waiting for a change; the next waiter makes a new event."""
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def __repr__(self) -> str:
        return f"<TokenHolder {self.name!r} {self.state}>"
