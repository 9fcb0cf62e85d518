"""The refresher: one task per provider that keeps its holder's token fresh."""

from __future__ import annotations

import random

import anyio

from ._fetch import TokenSource
from ._health import failure_kind
from ._holder import TokenHolder
from ._log import log
from ._policy import RefreshPolicy
from ._secret import Secret
from ._token import Token
from .exceptions import AuthError, TokenResponseError


__all__ = ["Refresher"]


def _unexpected(exc: Exception, provider: str) -> AuthError:
    return AuthError(
        f"unexpected {type(exc).__name__} in refresher", provider=provider, retryable=True
    )


class Refresher:
    """Fetches, publishes, sleeps until the refresh point or an invalidation; forever.

    It is the holder's only writer, so at most one fetch per provider is
    ever in flight. It prefers the refresh-token grant while it holds a
    refresh token, falls back once to the primary grant when the refresh
    is refused, and keeps the newest refresh token when the provider
    rotates them. No exception but cancellation ends it.

    Args:
        holder: Where tokens are published.
        source: Where tokens come from.
        policy: Timing rules.
        rng: Source of jitter (inject a seeded one for exact tests).
    """

    def __init__(
        self,
        holder: TokenHolder,
        source: TokenSource,
        policy: RefreshPolicy,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._holder = holder
        self._source = source
        self._policy = policy
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._refresh_token: Secret | None = holder.provider.refresh_token
        self._last_start: float | None = None
        # Failures of the current streak met while a token was still served.
        self._served_failures = 0

    async def run(self) -> None:
        """Run until cancelled."""
        holder, policy, rng = self._holder, self._policy, self._rng
        name = holder.name
        repeats = 0
        last_failure: tuple[object, ...] | None = None
        while True:
            holder.fetching = True
            try:
                token = await self._fetch()
            except Exception as exc:
                err = exc if isinstance(exc, AuthError) else _unexpected(exc, name)
                holder._record_failure(err)
                failures = holder.stats.consecutive_failures
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
                elif signature != last_failure:
                    # Logged once per change of state, not on every retry.
                    log.warning("aiopay_auth.fetch_failed", **fields)
                else:
                    log.debug("aiopay_auth.fetch_failed", **fields)
                last_failure = signature
                await anyio.sleep(delay)
                continue
            finally:
                holder.fetching = False
            self._served_failures = 0
            if failures := holder.stats.consecutive_failures:
                log.info("aiopay_auth.recovered", provider=name, after_failures=failures)
            last_failure = None
            previous = holder.latest
            same = previous is not None and previous.access_token == token.access_token
            repeats = repeats + 1 if same else 0
            holder._publish(token)
            now = holder.clock()
            delay = policy.refresh_delay(
                issued_at=token.issued_at, expires_at=token.expires_at, now=now, rng=rng
            )
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
            await holder._wait_refresh_needed(delay)

    def _retry_delay(self, err: AuthError, failures: int) -> float:
        holder = self._holder
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
        holder, policy = self._holder, self._policy
        # On the event loop's clock, the one sleeps run on (an injected
        # holder clock may stand still). A loop, not one sleep: a timer may
        # fire a hair early, the floor may not.
        while wait := policy.fetch_wait(last_start=self._last_start, now=anyio.current_time()):  # noqa: ASYNC110
            await anyio.sleep(wait)
        self._last_start = anyio.current_time()
        holder.stats.fetches += 1
        return await self._source.fetch(refresh_token)

    async def _fetch(self) -> Token:
        holder = self._holder
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
