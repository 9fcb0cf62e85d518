"""A provider's token: one writer publishes it, any number of readers take it.

A holder has two halves, and each piece of its state has one writer:

* :class:`TokenHolder` is the readers' face, and the only half users and
  client adapters see. Its attributes are read-only. It writes only what
  readers report: a 401 (:meth:`~TokenHolder.invalidate`,
  :meth:`~TokenHolder.resend_after_401`) and a wait (:meth:`~TokenHolder.get`),
  with the counters that go with them.
* :class:`~aiopay_auth._writer.HolderWriter` (in ``_writer.py``) is the
  writer's half, held by the holder's refresher (or its set's schedule)
  and the manager that closes it: tokens published, fetches and their
  failures, the fetch in flight, closing.

Nothing outside these two modules (and the tenant's, ``_tenant_holder.py``)
writes a holder's state; ``tests/test_layers.py`` checks it. A shared store reports its own
state (``store``) through the token source it wraps, and
:meth:`TokenHolder.health` reads it there.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from ._check import wait_bound
from ._health import FailureKind, Health, HealthState, failure_kind
from ._log import log
from ._policy import RefreshPolicy
from ._provider import Provider
from ._source import TokenSource, store_of
from ._token import Token
from .exceptions import AuthError, ConfigError, TenantRemovedError, TokenUnavailableError


if TYPE_CHECKING:
    from ._writer import HolderWriter


__all__ = ["ProviderStats", "RefusalStreak", "TokenHolder"]


@attrs.define
class _FetchCounts:
    """What the writer counts: token requests and what came of them."""

    fetches: int = 0
    failures: int = 0
    failures_by_kind: dict[FailureKind, int] = attrs.Factory(dict)
    consecutive_failures: int = 0
    refreshes: int = 0
    last_error: AuthError | ConfigError | None = None


@attrs.define
class _RequestCounts:
    """What the readers' face counts: waits, 401s and resends."""

    invalidations: int = 0
    recoveries: int = 0
    waits: int = 0
    max_wait: float = 0.0
    wait_time: float = 0.0
    refused_tokens: int = 0
    unreplayable: int = 0


@attrs.frozen(kw_only=True)
class ProviderStats:
    """Deprecated: a copy of one provider's counters; use :meth:`TokenHolder.health`.

    Returned by the deprecated :attr:`TokenHolder.stats`. Every field is
    in :class:`~aiopay_auth.Health` under the same name, except
    ``last_error``, which :attr:`TokenHolder.last_error` gives as the
    exception itself.
    """

    fetches: int
    failures: int
    failures_by_kind: dict[FailureKind, int]
    consecutive_failures: int
    refreshes: int
    invalidations: int
    recoveries: int
    waits: int
    max_wait: float
    last_error: AuthError | ConfigError | None
    store: str | None
    refused_tokens: int
    unreplayable: int


@attrs.frozen
class RefusalStreak:
    """Tokens in a row that ended by a 401 rather than by a normal refresh.

    A snapshot: the holder replaces it as the streak changes.

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

# How this module writes a holder's read-only slots (``current``, ``clock``),
# as attrs does for a frozen class.
_set = object.__setattr__


class TokenHolder:
    """Publishes one provider's current token to any number of readers.

    Its refresher is the only writer (through a private writer half).
    Readers take :attr:`current` (no lock, no await) and check its expiry;
    only when no usable token is there do they ``await`` :meth:`get`, and
    all of them share the one fetch that the refresher has in flight.
    Every attribute is read-only.

    You get a holder from :meth:`TokenManager.add
    <aiopay_auth.TokenManager.add>`; you do not build one yourself.

    Attributes:
        current: The latest token, or ``None`` before the first fetch and
            after an invalidation. It may have expired: check
            :attr:`Token.expires_at <aiopay_auth.Token.expires_at>`
            against :attr:`clock`, or call :meth:`usable`.
        clock: The monotonic clock tokens' times are on.
    """

    __slots__ = (
        "__weakref__",
        "_changed",
        "_closed",
        "_failure",
        "_fetched",
        "_fetching",
        "_latest",
        "_policy",
        "_provider",
        "_recent",
        "_refresh_asked",
        "_refresh_event",
        "_refusing",
        "_requests",
        "_since",
        "_source",
        "_wait_timeout",
        "_writer",
        # Plain slots, not properties: read on every request (a property
        # costs 3-5 times a slot read). __setattr__ keeps them read-only.
        "clock",
        "current",
    )

    current: Token | None
    clock: Callable[[], float]

    def __init__(
        self,
        provider: Provider,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout: float = 30.0,
        policy: RefreshPolicy | None = None,
    ) -> None:
        self._provider = provider
        self._policy = policy or RefreshPolicy()
        _set(self, "clock", clock)
        self._wait_timeout = wait_timeout
        _set(self, "current", None)
        self._latest: Token | None = None
        # A tuple, not a deque: a deque's first block alone is 600 bytes a holder.
        self._recent: tuple[str, ...] = ()
        self._since = 0.0  # when the current token was published
        self._fetching = False
        self._failure: AuthError | ConfigError | None = None
        self._closed = False
        self._refusing: RefusalStreak | None = None
        self._fetched = _FetchCounts()
        self._requests = _RequestCounts()
        self._source: TokenSource | None = None
        self._writer: HolderWriter | None = None
        # Events are made by the first waiter, not here: two events (with
        # their waiter queues) were 1.7 KiB of each tenant, most never waited on.
        self._changed: anyio.Event | None = None
        self._refresh_event: anyio.Event | None = None
        self._refresh_asked = False  # a refresh was asked since the last publication

    # --- the readers' face ---------------------------------------------

    @property
    def provider(self) -> Provider:
        """The provider whose token this holds (a tenant's changes when it is rotated)."""
        return self._provider

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._provider.name

    @property
    def wait_timeout(self) -> float:
        """Most seconds :meth:`get` waits when given no timeout."""
        return self._wait_timeout

    @property
    def policy(self) -> RefreshPolicy:
        """The manager's :class:`~aiopay_auth.RefreshPolicy`; its backoff paces refused tokens."""
        return self._policy

    @property
    def fetching(self) -> bool:
        """Whether the refresher has a token request in flight, or a retry pending."""
        return self._fetching

    @property
    def refusing(self) -> RefusalStreak | None:
        """The current streak of tokens ended by a 401, or ``None`` (see :meth:`invalidate`)."""
        return self._refusing

    @property
    def latest(self) -> Token | None:
        """The last token published, even if since invalidated or expired."""
        return self._latest

    @property
    def last_error(self) -> AuthError | ConfigError | None:
        """The latest fetch failure, if any since the last success.

        A :class:`~aiopay_auth.ConfigError` if a custom token source
        raised one. :meth:`health` gives its message.
        """
        return self._fetched.last_error

    @property
    def stats(self) -> ProviderStats:
        """Deprecated: a copy of the counters; use :meth:`health` (and :attr:`last_error`)."""
        warnings.warn(
            "TokenHolder.stats is deprecated: use holder.health() (same field names) "
            "and holder.last_error",
            DeprecationWarning,
            stacklevel=2,
        )
        health = self.health()
        return ProviderStats(
            **{
                field.name: getattr(health, field.name)
                for field in attrs.fields(ProviderStats)
                if field.name != "last_error"
            },
            last_error=self._fetched.last_error,
        )

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
            with anyio.fail_after(self._wait_timeout if timeout is None else timeout):
                while True:
                    failure = self._failure
                    if failure is not None:
                        raise self._unavailable(failure.message, failure) from failure
                    await self._change().wait()
                    token = self.usable()
                    if token is not None:
                        return token
        except TimeoutError:
            last = self._fetched.last_error
            raise self._unavailable(
                "no usable token within the wait bound"
                + (f"; last failure: {last.message}" if last else ""),
                last,
            ) from last
        finally:
            waited = self.clock() - started
            requests = self._requests
            requests.waits += 1
            requests.wait_time += waited
            requests.max_wait = max(requests.max_wait, waited)

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
        streak = self._refusing
        if streak is not None:
            age = self.clock() - self._since
            if age < streak.delay:
                if not streak.refused:
                    self._refusing = attrs.evolve(streak, refused=True)
                return False
            if age > 2 * self._policy.backoff_max:
                streak = None
        self._refused(streak or RefusalStreak())
        _set(self, "current", None)
        self._requests.invalidations += 1
        self._ask_refresh()
        return True

    def resend_after_401(self, token: Token, *, replayable: bool) -> bool:
        """Report that *token* got a 401; whether the request may be resent once.

        The one 401 rule every client adapter shares (the aiohttp
        middleware and :mod:`aiopay_auth.httpx` both call it). The token is
        invalidated in every case (only the first report against the
        current token wakes the refresher, see :meth:`invalidate`). No
        resend while the holder backs off on the current token, when the
        401 is for that token or the API has refused it too (it refuses
        fresh tokens: the 401 goes to the caller); a late 401 for an older
        token, while the current one has not been refused, is resent with
        the current one. No resend either when the holder kept the token,
        nor when the body cannot be sent again (*replayable* false; counted
        in ``health().unreplayable``). A ``True`` answer is counted in
        ``health().recoveries``: the caller resends once with the next
        token (:meth:`get`) and, on a second 401, invalidates that one too.
        """
        streak = self._refusing
        backing_off = self.backing_off() and (
            token is self.current or (streak is not None and streak.refused)
        )
        self.invalidate(token)  # during a backoff: noted as refused
        if backing_off or self.current is token:
            return False  # backing off: the holder keeps the token
        if not replayable:
            self._requests.unreplayable += 1
            return False
        self._requests.recoveries += 1
        return True

    def _refused(self, streak: RefusalStreak) -> None:
        """Count the current token as refused: the streak grows, its backoff too."""
        tokens = streak.tokens + 1
        delay = self._policy.backoff(tokens, rng=_RNG)
        self._refusing = RefusalStreak(tokens=tokens, delay=delay, refused=False)
        self._requests.refused_tokens += 1
        if tokens >= 2:
            emit = log.warning if tokens == 2 else log.debug
            emit(
                "aiopay_auth.api_refusing_tokens",
                provider=self.name,
                refused=tokens,
                backoff=round(delay, 3),
            )

    def _replaced(self) -> None:
        """The current token is being replaced by a refresh: end or grow the streak."""
        streak = self._refusing
        if streak is None or self.current is None:
            return
        if streak.refused:
            self._refused(streak)  # refreshed, but refused during its backoff
            return
        # A normal refresh: this token ended without any 401.
        self._refusing = None
        if streak.tokens >= 2:
            log.info("aiopay_auth.api_accepting_tokens", provider=self.name, refused=streak.tokens)

    def backing_off(self) -> bool:
        """Whether 401s now go to callers as they are (see :meth:`invalidate`)."""
        return self.refusal_backoff() > 0.0

    def refusal_backoff(self) -> float:
        """Seconds left before a 401 may invalidate the current token (0: none)."""
        streak = self._refusing
        if streak is None or self.current is None:
            return 0.0
        return max(0.0, self._since + streak.delay - self.clock())

    def _ask_refresh(self) -> None:
        """Wake the refresher's wait for its refresh point, now or when it next waits."""
        self._refresh_asked = True
        if self._refresh_event is not None:
            self._refresh_event.set()

    @property
    def state(self) -> HealthState:
        """The provider's state (see :data:`~aiopay_auth.HealthState`)."""
        if self._closed:
            return "closed"
        usable = self.usable() is not None
        if self._fetched.last_error is not None:
            return "degraded" if usable else "failing"
        if not usable:
            return "starting" if self._latest is None else "refreshing"
        return "refreshing" if self._fetching else "fresh"

    def health(self) -> Health:
        """A snapshot of state and counters; no I/O, no await."""
        fetched, requests, token = self._fetched, self._requests, self.current
        last = fetched.last_error
        return Health(
            provider=self.name,
            state=self.state,
            expires_in=None if token is None else token.expires_at - self.clock(),
            fetches=fetched.fetches,
            failures=fetched.failures,
            failures_by_kind=dict(fetched.failures_by_kind),
            consecutive_failures=fetched.consecutive_failures,
            refreshes=fetched.refreshes,
            invalidations=requests.invalidations,
            recoveries=requests.recoveries,
            waits=requests.waits,
            max_wait=requests.max_wait,
            wait_time=requests.wait_time,
            last_error=None if last is None else str(last),
            last_error_kind=None if last is None else failure_kind(last),
            store=store_of(self._source),
            refused_tokens=requests.refused_tokens,
            refusal_streak=0 if self._refusing is None else self._refusing.tokens,
            refusal_backoff=self.refusal_backoff(),
            unreplayable=requests.unreplayable,
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

    def __setattr__(self, name: str, value: object) -> None:
        if not name.startswith("_"):
            msg = f"{type(self).__name__}.{name} is read-only: only its refresher writes it"
            raise AttributeError(msg)
        _set(self, name, value)

    def __delattr__(self, name: str) -> None:
        msg = f"{type(self).__name__}.{name} cannot be deleted"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        return f"<TokenHolder {self.name!r} {self.state}>"
