"""A tenant's token holder: it tells its set's schedule when a token is wanted now."""

from __future__ import annotations

from collections.abc import Callable

from ._health import HealthState
from ._holder import TokenHolder, _set
from ._policy import RefreshPolicy
from ._provider import Provider
from ._source import TokenSource
from ._token import Token
from ._writer import HolderWriter


__all__ = ["TenantHolder", "TenantWriter"]


def _nobody(again: bool) -> None:
    """The hook before the schedule takes the holder: nobody to tell."""


class TenantHolder(TokenHolder):
    """The holder of one tenant of a :class:`~aiopay_auth.Tenants` set.

    Readers see a :class:`~aiopay_auth.TokenHolder`. What differs is the
    writer's side (a :class:`TenantWriter`): no refresher task of its own
    waits on it. Its set's schedule (one task for every tenant) is told
    through one hook when a token is wanted now: a request waits for one,
    a 401 invalidated the current one, or new credentials were given; then
    the tenant jumps ahead of the set's queued background refreshes.
    """

    __slots__ = ("_idle", "_urge", "_used")

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
        self._used = True
        self._idle = False

    @property
    def idle(self) -> bool:
        """The tenant had no request for its set's ``idle_after``.

        It is not refreshed and holds no token until its next request.
        """
        return self._idle

    def note_request(self) -> None:
        """Note a request for the tenant (its middleware calls this on each one)."""
        self._used = True

    async def get(self, timeout: float | None = None) -> Token:
        """As :meth:`TokenHolder.get`; a wait moves the tenant ahead of background refreshes."""
        if self.usable() is None:
            self._used = True
            self._urge(False)
        return await super().get(timeout)

    def invalidate(self, token: Token) -> bool:
        """As :meth:`TokenHolder.invalidate`; the next token is fetched ahead of background ones."""
        if super().invalidate(token):
            self._urge(False)
            return True
        return False

    @property
    def state(self) -> HealthState:
        """As :attr:`TokenHolder.state`, and ``"idle"`` while the tenant rests."""
        if self._idle and not self._closed:
            return "idle"
        return super().state


class TenantWriter(HolderWriter):
    """The writer's half of a :class:`TenantHolder`, held by its set's schedule."""

    __slots__ = ()

    holder: TenantHolder

    def __init__(self, holder: TenantHolder, source: TokenSource | None = None) -> None:
        super().__init__(holder, source)

    def urge_with(self, urge: Callable[[bool], None]) -> None:
        """Tell *urge* from now on when a token is wanted now (``True``: even mid-fetch)."""
        self.holder._urge = urge

    def rotate(self, provider: Provider) -> None:
        """As :meth:`HolderWriter.rotate`, and the schedule starts the fetch at once."""
        super().rotate(provider)
        self.holder._urge(True)  # even during a backoff or a fetch

    def take_use(self) -> bool:
        """Whether a request came since the last call (the schedule's refresh points)."""
        holder = self.holder
        used, holder._used = holder._used, False
        return used

    def rest(self) -> None:
        """Drop the token: the tenant had no request for a while."""
        holder = self.holder
        _set(holder, "current", None)
        holder._latest = None
        holder._recent = ()
        holder._idle = True

    def resume(self) -> None:
        """A request came for the resting tenant: it is refreshed again."""
        self.holder._idle = False
