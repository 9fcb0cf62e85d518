"""One token request of one provider, and when to make the next: the refresher's per-fetch step.

A :class:`~aiopay_auth._refresh.Refresher` (one task per provider) and a
set's schedule (one task for many tenants) both drive a
:class:`FetchStep`: each rule (refresh point, backoff, same-token
backoff, the ``min_fetch_interval`` floor, the refresh-token fallback,
failures that cannot heal) has this one copy.
"""

from __future__ import annotations

import random

import anyio
import attrs

from ._health import failure_kind
from ._log import log
from ._policy import RefreshPolicy
from ._provider import Provider
from ._secret import Secret
from ._source import TokenSource
from ._token import Token
from ._writer import HolderWriter
from .exceptions import AuthError, ConfigError, TokenResponseError


__all__ = ["FetchStep", "Outcome", "spread_delay"]


def _unexpected(exc: Exception, provider: str) -> AuthError:
    return AuthError(
        f"unexpected {type(exc).__name__} in refresher", provider=provider, retryable=True
    )


def spread_delay(delay: float, *, spread: float, rng: random.Random) -> float:
    """*delay* moved earlier by a uniformly random part of up to *spread* of it.

    A set of tenants started together would otherwise refresh together,
    one lifetime later, and again each lifetime after. Drawing each
    refresh point uniformly in ``[(1 - spread) * delay, delay]`` spreads
    them over that window: with *N* tenants and a window of *W* seconds,
    about ``N / W`` a second, each tenant's phase drawn afresh at every
    refresh. Never later than *delay*. With *spread* 0, *delay* itself and
    no draw.
    """
    if not spread:
        return delay
    return delay * (1.0 - spread * rng.random())


@attrs.frozen
class Outcome:
    """What one step did: whether a token was published, and when to go again.

    Attributes:
        published: A token was fetched and published (else the failure was
            recorded on the holder).
        delay: Seconds until the next token request: the refresh point
            after a success, the backoff after a failure.
    """

    published: bool
    delay: float


class FetchStep:
    """One provider's token requests, one at a time, and the rules around them.

    Each call fetches one token (the refresh-token grant while one is
    held, falling back once to the primary grant when it is refused),
    publishes it on the holder or records the failure there (an error
    that cannot heal fails the waiters at once), logs, and returns the
    delay until the next call: the policy's refresh point, moved earlier
    by :func:`spread_delay` when *spread* is set, or its backoff. No two
    calls start their token requests less than ``min_fetch_interval``
    apart. No exception but cancellation leaves a call.

    Args:
        writer: The writer's half of the holder where tokens are published.
        source: Where tokens come from.
        policy: Timing rules.
        rng: Source of jitter.
        spread: The part of each refresh delay over which refresh points
            are spread (0: the policy's point, jittered as it says).

    Attributes:
        fetched_with: The holder's provider profile when the request of
            the last token fetched began (``None`` before one), whatever
            answered it: the provider or a fleet's store.
        failed_with: The same for the last request that failed.
    """

    __slots__ = (
        "_last_failure",
        "_last_start",
        "_policy",
        "_refresh_token",
        "_repeats",
        "_rng",
        "_served_failures",
        "_source",
        "_spread",
        "_writer",
        "failed_with",
        "fetched_with",
    )

    def __init__(
        self,
        writer: HolderWriter,
        source: TokenSource,
        policy: RefreshPolicy,
        rng: random.Random,
        *,
        spread: float = 0.0,
    ) -> None:
        self._writer = writer
        holder = writer.holder
        self._source = source
        self._policy = policy
        self._rng = rng
        self._spread = spread
        self._refresh_token: Secret | None = holder.provider.refresh_token
        self._last_start: float | None = None
        # Failures of the current streak met while a token was still served.
        self._served_failures = 0
        self._repeats = 0  # the same token handed back, in a row
        self._last_failure: tuple[object, ...] | None = None
        self.fetched_with: Provider | None = None
        self.failed_with: Provider | None = None

    async def __call__(self) -> Outcome:
        """Fetch once; publish or record; return when to fetch again."""
        writer = self._writer
        writer.fetching = True
        try:
            token = await self._fetch()
        except Exception as exc:
            return Outcome(published=False, delay=self._failed(exc))
        finally:
            writer.fetching = False
        return Outcome(published=True, delay=self._fetched(token))

    def _failed(self, exc: Exception) -> float:
        holder = self._writer.holder
        name = holder.name
        # A source's ConfigError is recorded as it is, never retryable, like an AuthError.
        err = exc if isinstance(exc, AuthError | ConfigError) else _unexpected(exc, name)
        self._writer.record_failure(err)
        failures = self._writer.consecutive_failures
        delay = self._retry_delay(err, failures)
        fields = {
            "provider": name,
            "error": str(err),
            "kind": failure_kind(err),
            "retryable": err.retryable,
            "attempt": failures,
            "retry_in": round(delay, 3),
            "state": holder.state,
        }
        signature = (fields["kind"], fields["state"], getattr(err, "error", None))
        if err is not exc:
            secrets = (*holder.provider.secrets(), self._refresh_token)
            log.crash("aiopay_auth.refresher_crashed", exc, secrets=secrets, **fields)
        elif signature != self._last_failure:
            # Logged once per change of state, not on every retry.
            log.warning("aiopay_auth.fetch_failed", **fields)
        else:
            log.debug("aiopay_auth.fetch_failed", **fields)
        self._last_failure = signature
        return delay

    def _fetched(self, token: Token) -> float:
        holder, policy, rng = self._writer.holder, self._policy, self._rng
        name = holder.name
        self._served_failures = 0
        if failures := self._writer.consecutive_failures:
            log.info("aiopay_auth.recovered", provider=name, after_failures=failures)
        self._last_failure = None
        previous = holder.latest
        same = previous is not None and previous.access_token == token.access_token
        self._repeats = repeats = self._repeats + 1 if same else 0
        self._writer.publish(token)
        now = holder.clock()
        delay = policy.refresh_delay(
            issued_at=token.issued_at, expires_at=token.expires_at, now=now, rng=rng
        )
        delay = spread_delay(delay, spread=self._spread, rng=rng)
        if repeats:
            # The provider handed back the token we hold: asking again at
            # once would storm it, so back off as after a failure, and as
            # after a failure no later than halfway to its expiry (a
            # caching server hands the same token back until its end).
            backoff = policy.backoff(repeats, rng=rng, remaining=token.remaining(now))
            delay = max(delay, backoff)
        log.debug(
            "aiopay_auth.token_fetched",
            provider=name,
            fingerprint=token.fingerprint,
            lifetime=round(token.lifetime, 3),
            refresh_in=round(delay, 3),
            same_token=same,
        )
        return delay

    def _retry_delay(self, err: AuthError | ConfigError, failures: int) -> float:
        holder = self._writer.holder
        token = holder.usable()
        if token is not None:
            self._served_failures = failures
        # Retries while a token was served came at most halfway to its
        # expiry (down to the floor near its end): they do not grow the
        # backoff of the callers left without a token once it runs out.
        return self._policy.backoff(
            failures - self._served_failures if token is None else failures,
            rng=self._rng,
            retry_after=err.retry_after if isinstance(err, TokenResponseError) else None,
            retryable=err.retryable,
            remaining=None if token is None else token.remaining(holder.clock()),
        )

    async def _ask(self, refresh_token: Secret | None) -> Token:
        """Start one token request, never sooner than the policy's floor after the last."""
        holder, policy = self._writer.holder, self._policy
        # On the event loop's clock, the one sleeps run on (an injected
        # holder clock may stand still). A loop, not one sleep: a timer may
        # fire a hair early, the floor may not.
        while wait := policy.fetch_wait(last_start=self._last_start, now=anyio.current_time()):  # noqa: ASYNC110
            await anyio.sleep(wait)
        self._last_start = anyio.current_time()
        self._writer.fetch_started()
        profile = holder.provider
        try:
            token = await self._source.fetch(refresh_token)
        except Exception:
            self.failed_with = profile
            raise
        self.fetched_with = profile
        return token

    async def _fetch(self) -> Token:
        holder = self._writer.holder
        refresh_token = self._refresh_token
        if refresh_token is None:
            token = await self._ask(None)
        else:
            try:
                token = await self._ask(refresh_token)
            except TokenResponseError as err:
                if err.retryable:
                    raise
                # The refresh token was refused (expired, spent, revoked):
                # drop it and ask once with the primary grant.
                log.info(
                    "aiopay_auth.refresh_token_refused",
                    provider=holder.name,
                    error=err.error,
                    status=err.status,
                )
                self._refresh_token = None
                token = await self._ask(None)
        if token.refresh_token is not None:
            self._refresh_token = token.refresh_token
        return token
