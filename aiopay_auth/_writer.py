"""The writer's half of a :class:`~aiopay_auth.TokenHolder`: the only code that publishes on it.

The holder (``_holder.py``) is what readers see; this is what its
refresher, its set's schedule and its manager write through. The two
modules are one unit of privacy: nothing else touches a holder's private
state (``tests/test_layers.py``).
"""

from __future__ import annotations

from typing import Protocol

import anyio

from ._health import failure_kind
from ._holder import _RECENT, TokenHolder, _set
from ._provider import Provider
from ._source import TokenSource
from ._token import Token
from .exceptions import AuthError, ConfigError, TokenUnavailableError, _without_frames


__all__ = ["Fetches", "HolderWriter"]


class Fetches(Protocol):
    """What a writer knows of its fetches: the credentials of the last success and failure."""

    @property
    def fetched_with(self) -> Provider | None:
        """The provider profile the last token was fetched with."""

    @property
    def failed_with(self) -> Provider | None:
        """The provider profile of the last request that failed."""


class HolderWriter:
    """The writer's half of a :class:`TokenHolder`: the only code that publishes on it.

    Held by the holder's refresher (or its set's schedule) and by the
    manager, which closes it. A holder takes one writer, once.

    Args:
        holder: The holder to write.
        source: The token source its refresher fetches from; a shared
            store's ``store`` state is read there (see
            :func:`~aiopay_auth._source.store_of`).

    Raises:
        RuntimeError: *holder* already has a writer.
    """

    __slots__ = ("holder",)

    def __init__(self, holder: TokenHolder, source: TokenSource | None = None) -> None:
        if holder._writer is not None:
            msg = f"{holder!r} already has a writer"
            raise RuntimeError(msg)
        holder._writer = self
        holder._source = source
        self.holder = holder

    @property
    def fetching(self) -> bool:
        """Whether a token request is in flight or a retry pending (shown by ``state``)."""
        return self.holder._fetching

    @fetching.setter
    def fetching(self, value: bool) -> None:
        self.holder._fetching = value

    @property
    def consecutive_failures(self) -> int:
        """Failed fetches since the last token published."""
        return self.holder._fetched.consecutive_failures

    def fetch_started(self) -> None:
        """Count one token request sent."""
        self.holder._fetched.fetches += 1

    def publish(self, token: Token) -> None:
        """Make *token* current and wake every waiter; nothing once the holder is closed.

        A fetch may finish in the same turn of the event loop as the close
        (or a tenant's removal): its token is dropped, never served.
        """
        holder = self.holder
        if holder._closed:
            return
        if holder._latest is not None:
            holder._fetched.refreshes += 1
        holder._replaced()
        _set(holder, "current", token)
        holder._latest = token
        holder._recent = (*holder._recent[1 - _RECENT :], token.access_token)
        holder._since = holder.clock()
        holder._failure = None
        holder._fetched.last_error = None
        holder._fetched.consecutive_failures = 0
        holder._refresh_asked = False
        holder._refresh_event = None
        holder._wake()

    def record_failure(self, error: AuthError | ConfigError) -> None:
        """Note a failed fetch.

        An error that cannot heal fails every waiter at once, whatever the
        order of events: when no usable token is left now, or later, when
        the token still served expires or is invalidated; only a published
        token clears it. A retryable error leaves waiters waiting for the
        next attempt, up to their wait bound.
        """
        _without_frames(error)  # kept below: its frames' locals held the raw answer
        holder = self.holder
        if holder._closed:
            return  # the close's error stands: waiters fail at once
        fetched = holder._fetched
        fetched.failures += 1
        fetched.consecutive_failures += 1
        kind = failure_kind(error)
        fetched.failures_by_kind[kind] = fetched.failures_by_kind.get(kind, 0) + 1
        fetched.last_error = error
        holder._failure = None if error.retryable else error
        if holder._failure is not None:
            holder._wake()

    async def wait_refresh_needed(self, delay: float) -> None:
        """Sleep *delay* seconds, or less if a token is invalidated or new credentials come."""
        holder = self.holder
        if holder._refresh_asked:
            return
        event = holder._refresh_event
        if event is None:
            event = holder._refresh_event = anyio.Event()
        with anyio.move_on_after(delay):
            await event.wait()

    def rotate(self, provider: Provider) -> None:
        """Fetch with *provider*'s credentials from now on, starting at once.

        The current token is still served until the new one is published.
        """
        self.holder._provider = provider
        self.holder._ask_refresh()

    async def rotated(self, fetches: Fetches) -> Token:
        """Wait until a token fetched with the holder's current credentials is published.

        *fetches* tells which credentials the last token was fetched with,
        and the last failure. Gives up at once when the current
        credentials are refused with an error that cannot heal (not when a
        request still in flight with the old ones is), or when the holder
        closes; else after its ``wait_timeout``.

        Raises:
            TokenUnavailableError: As :meth:`TokenHolder.get`; its
                ``last_error`` says why.
        """
        holder = self.holder
        profile, failures = holder._provider, holder._fetched.failures
        try:
            with anyio.fail_after(holder._wait_timeout):
                while (token := holder._latest) is None or fetches.fetched_with is not profile:
                    if holder._closed:  # removed (or the manager closed) meanwhile
                        failure = holder._failure
                        reason = failure.message if failure is not None else "closed"
                        raise holder._unavailable(f"{reason} while rotating", failure)
                    changed = holder._change()
                    last = holder._fetched.last_error
                    if (
                        holder._fetched.failures > failures
                        and fetches.failed_with is profile
                        and last
                        and not last.retryable
                    ):
                        break  # the new credentials refused for good: no use waiting
                    await changed.wait()
                else:
                    return token
        except TimeoutError:
            pass
        last = holder._fetched.last_error
        msg = "no token with the new credentials" + (
            f"; last failure: {last.message}" if last else ""
        )
        raise TokenUnavailableError(msg, provider=holder.name, last_error=last) from last

    def close(self, error: TokenUnavailableError | None = None) -> None:
        """Fail every present and future waiter with *error*: the manager is closing."""
        holder = self.holder
        holder._closed = True
        _set(holder, "current", None)
        holder._failure = error or TokenUnavailableError(
            "the token manager is closed", provider=holder.name, retryable=False
        )
        holder._wake()
