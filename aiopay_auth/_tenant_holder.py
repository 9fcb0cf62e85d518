"""A tenant's token holder: it tells its set's schedule when a token is wanted now."""

from __future__ import annotations

from collections.abc import Callable

from ._health import HealthState
from ._holder import TokenHolder
from ._policy import RefreshPolicy
from ._provider import Provider
from ._token import Token


__all__ = ["TenantHolder"]


def _nobody(again: bool) -> None:
    """The hook before the schedule takes the holder: nobody to tell."""


class TenantHolder(TokenHolder):
    """The holder of one tenant of a :class:`~aiopay_auth.Tenants` set.

    Readers see a :class:`~aiopay_auth.TokenHolder`. What differs is the
    writer's side: no refresher task of its own waits on it. Its set's
    schedule (one task for every tenant) is told through one hook when a
    token is wanted now: a request waits for one, a 401 invalidated the
    current one, or new credentials were given; then the tenant jumps
    ahead of the set's queued background refreshes.

    Attributes:
        used: Set on each request for the tenant (by its middleware, or a
            wait in :meth:`get`); its schedule reads and clears it at
            refresh points to tell idle tenants.
        idle: The tenant had no request for its set's ``idle_after``: it
            is not refreshed and holds no token until its next request.
    """

    __slots__ = ("_urge", "idle", "used")

    def __init__(
        self,
        provider: Provider,
        *,
        clock: Callable[[], float],
        wait_timeout: float,
        policy: RefreshPolicy,
    ) -> None:
        super().__init__(provider, clock=clock, wait_timeout=wait_timeout, policy=policy)
        self._urge: Callable[[bool], None] = _nobody
        self.used = True
        self.idle = False

    async def get(self, timeout: float | None = None) -> Token:
        """As :meth:`TokenHolder.get`; a wait moves the tenant ahead of background refreshes."""
        if self.usable() is None:
            self.used = True
            self._urge(False)
        return await super().get(timeout)

    def invalidate(self, token: Token) -> bool:
        """As :meth:`TokenHolder.invalidate`; the next token is fetched ahead of background ones."""
        if super().invalidate(token):
            self._urge(False)
            return True
        return False

    def _rotate(self, provider: Provider) -> None:
        super()._rotate(provider)
        self._urge(True)  # even during a backoff or a fetch

    def _rest(self) -> None:
        """Drop the token: the tenant had no request for a while (its schedule only)."""
        self.current = None
        self._latest = None
        self._recent = ()
        self.idle = True

    @property
    def state(self) -> HealthState:
        """As :attr:`TokenHolder.state`, and ``"idle"`` while the tenant rests."""
        if self.idle and not self._closed:
            return "idle"
        return super().state
