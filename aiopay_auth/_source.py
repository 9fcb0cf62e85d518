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


__all__ = ["TokenSource"]


class TokenSource(Protocol):
    """Where a refresher gets tokens from: the seam for a shared store.

    The default asks the provider over HTTP; a fleet-wide cache can wrap it
    without touching the request hot path.
    """

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Return a new token, by the refresh grant when *refresh_token* is given."""
        ...
