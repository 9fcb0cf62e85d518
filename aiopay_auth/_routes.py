"""Which provider's token a URL may carry: the one routing of every client adapter.

The aiohttp middleware (:class:`aiopay_auth.BearerAuth`) and
:mod:`aiopay_auth.httpx` both decide each hop with a :class:`Routes`: the
scope rule (:mod:`aiopay_auth._scope`) over the holders' API URLs, the
check that no two providers claim one URL, and which ``Authorization``
values are our own recent tokens. No I/O, no HTTP client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from yarl import URL

from ._check import instance_of
from ._holder import TokenHolder
from ._scope import ScopeTable
from .exceptions import ConfigError


__all__ = ["Routes", "SharedApi"]


class SharedApi(Protocol):
    """An API many credentials share (:class:`~aiopay_auth.Tenants`): each request names one.

    :class:`BearerAuth` given one sends nothing to its API on its own: a
    request there with no tenant chosen fails with :meth:`no_tenant`'s
    error, never a guess.
    """

    @property
    def name(self) -> str:
        """The API's name, for errors."""
        ...

    @property
    def api(self) -> tuple[URL, ...]:
        """The URLs the API covers (origin plus path prefix)."""
        ...

    def no_tenant(self, url: URL) -> ConfigError:
        """The error for a request to *url* that chose no tenant (a programming error)."""
        ...


def _shared(value: object) -> bool:
    """Whether *value* is a shared API (duck-typed: :class:`SharedApi`'s members)."""
    return not isinstance(value, TokenHolder) and callable(getattr(value, "no_tenant", None))


class Routes:
    """The holders of a client adapter, and which one a URL belongs to.

    Args:
        owner: The adapter's name, for errors.
        holders: The providers' token holders, and any shared APIs.

    Raises:
        ConfigError: No holder, a holder that is neither, or two providers
            claim the same API URL.
    """

    __slots__ = ("_scopes", "holders")

    def __init__(self, owner: str, *holders: TokenHolder | SharedApi) -> None:
        if not holders:
            msg = f"{owner} needs at least one token holder"
            raise ConfigError(msg)
        for holder in holders:
            if not _shared(holder):
                instance_of(f"{owner} holders", holder, TokenHolder)
        self.holders = tuple(h for h in holders if isinstance(h, TokenHolder))
        self._scopes: ScopeTable[TokenHolder | SharedApi] = ScopeTable()
        for holder in holders:
            for url in holder.provider.api if isinstance(holder, TokenHolder) else holder.api:
                other = self._scopes.claim(url, holder)
                if other is not None:
                    msg = (
                        f"providers {other.name!r} and {holder.name!r} both claim {url}; "
                        "a URL can carry only one provider's token"
                    )
                    raise ConfigError(msg, provider=holder.name)

    def find(self, url: URL) -> TokenHolder | SharedApi | None:
        """The holder or shared API whose scope holds *url* (the longest prefix), if any."""
        return self._scopes.find(url)

    def finder(self) -> Callable[[URL], TokenHolder | SharedApi | None]:
        """:meth:`find` itself, one call shorter: for a per-request hot path."""
        return self._scopes.find

    def holder_for(self, url: URL) -> TokenHolder | None:
        """The holder whose token a request to *url* carries, if any."""
        holder = self._scopes.find(url)
        return holder if isinstance(holder, TokenHolder) else None

    def ours(self, value: str, keep: TokenHolder | None) -> bool:
        """Whether the header *value* carries a recent token of a holder other than *keep*.

        The scheme is matched case-insensitively (RFC 9110 §11.1) and any
        whitespace around and between the parts is ignored.
        """
        parts = value.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return False
        credentials = parts[1].strip()
        return any(holder is not keep and holder.issued(credentials) for holder in self.holders)
