"""Where a refresher gets tokens from: the seam, with no HTTP client in it.

The refresher, the tenants' schedule, the fleet and any wrapper a worker
passes as ``TokenManager(token_source=...)`` see only this protocol; the
aiohttp implementation (:class:`~aiopay_auth._fetch.HttpTokenSource`)
lives in ``_fetch.py``, so importing the seam never imports aiohttp.
"""

from __future__ import annotations

from typing import Protocol

from ._secret import Secret
from ._token import Token


__all__ = ["TokenSource", "store_of"]


class TokenSource(Protocol):
    """Where a refresher gets tokens from: the seam for a shared store.

    The default asks the provider over HTTP; a fleet-wide cache can wrap it
    without touching the request hot path.
    """

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Return a new token, by the refresh grant when *refresh_token* is given."""
        ...


def store_of(source: object) -> str | None:
    """A token source's shared-store state, for ``health().store``.

    A source that shares tokens through a store (such as
    :class:`~aiopay_auth.fleet.RedisFleet`'s) says how it stands as its
    ``store`` attribute: ``"shared"``, or ``"local"`` while the store fails
    and the process fetches alone. A source that wraps another forwards
    the inner one's. ``None`` for any other source, or none.
    """
    store = getattr(source, "store", None)
    return store if isinstance(store, str) else None
