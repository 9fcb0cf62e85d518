"""A fake's token ledger: the clients it accepts, the tokens it issued, and its token desk.

:class:`TokenLedger`, a base of :class:`~aiopay_auth.testing.FakeProvider`, keeps the access
and refresh tokens the server issued and the clients added to it (the public
``add_client``, ``remove_client``, ``spend_refresh_token`` and ``revoke_all``), and answers
what its dialect asks through :class:`_TokenDesk` (a :class:`~._dialects.TokenDesk`) while
answering a token request: client and user checks, spending refresh tokens, issuing tokens.
It checks against the server's settings (credentials, lifetime, clock, refresh token policy)
and counts in its counters. No I/O.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import attrs

from ._dialects import DialectRules, Rejection
from ._dialects._wire import same


__all__ = ["KIND_API", "KIND_STOREFRONT", "TokenLedger"]

# Token kinds: which protected API a token is good for. "api" is the dialect's main API
# (Oro's back office); "storefront" the second API of a dialect that has one (Oro's).
KIND_API: Final = "api"
KIND_STOREFRONT: Final = "storefront"


class _Access(NamedTuple):
    expires_at: float
    kind: str
    client_id: str


class _Refresh(NamedTuple):
    kind: str
    client_id: str


def _wire_lifetime(lifetime: float) -> int | float:
    """The ``expires_in`` reported for a lifetime, exactly the value enforced.

    A JSON integer when the lifetime is whole (as real servers send), else the same float,
    which JSON carries exactly (``repr`` round-trips), so client and server agree to the bit.
    """
    seconds = float(lifetime)
    return int(seconds) if seconds.is_integer() else seconds


class TokenLedger:
    """The clients a fake accepts and the tokens it issued; the desk its dialect asks."""

    # The server's settings checked here and its counters counted here (FakeProvider's
    # public attributes, set and documented there).
    _rules: DialectRules
    lifetime: float
    clock: Callable[[], float]
    client_id: str
    client_secret: str
    username: str
    password: str
    storefront_client_id: str
    audience: str
    issue_refresh_tokens: bool | None
    rotate_refresh_tokens: bool
    tokens_issued: int
    issued_tokens: set[str]
    issued_refresh_tokens: set[str]
    token_calls_by_client: Counter[str]

    def __init__(self) -> None:
        """Start with no extra client and no token."""
        super().__init__()
        self._clients: dict[str, list[str]] = {}
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._desk = _TokenDesk(self)

    def add_client(
        self, client_id: str | None = None, client_secret: str | None = None
    ) -> tuple[str, str]:
        """Accept one more client credential, as a provider does for each merchant.

        Its tokens are good for the same API as the default client's. Adding a second
        secret to a known client id accepts both (a rotation's grace period) until
        :meth:`remove_client` drops one.

        Args:
            client_id: The id; a new ``merchant-<n>`` when ``None``.
            client_secret: The secret; a random one when ``None``.

        Returns:
            The ``(client_id, client_secret)`` pair, for :func:`provider_for`'s
            ``client_id=`` and ``client_secret=``.
        """
        if client_id is None:
            client_id = f"merchant-{len(self._clients) + 1}"
            while client_id in self._clients:
                client_id += "x"
        if client_secret is None:
            client_secret = secrets.token_urlsafe(24)
        self._clients.setdefault(client_id, []).append(client_secret)
        return client_id, client_secret

    def remove_client(self, client_id: str, client_secret: str | None = None) -> bool:
        """Stop accepting one secret of a client added with :meth:`add_client`, or all of it.

        Tokens already issued to it stay valid until they expire (see :meth:`revoke_all`).

        Returns:
            Whether there was something to remove.
        """
        known = self._clients.get(client_id)
        if known is None or (client_secret is not None and client_secret not in known):
            return False
        if client_secret is None:
            known.clear()
        else:
            known.remove(client_secret)
        if not known:
            del self._clients[client_id]
        return True

    def spend_refresh_token(self, refresh_token: str) -> bool:
        """Mark a refresh token as used elsewhere (another process spent it).

        Args:
            refresh_token: A refresh token this server issued.

        Returns:
            Whether it was still valid.
        """
        return self._refresh.pop(refresh_token, None) is not None

    def revoke_all(self) -> None:
        """Invalidate every access token issued so far; the API answers 401 to them.

        Refresh tokens stay valid, so a client can recover through a refresh grant.
        """
        self._access.clear()

    def _admit(self, token: str, kind: str) -> tuple[str | None, bool]:
        """Whom *token* was issued to, if it is live and good for the *kind* API.

        Returns:
            That client's id (else ``None``), and whether *token* is one this server
            issued that has expired.
        """
        info = self._access.get(token)
        if info is None:
            return None, False
        if info.expires_at <= self.clock():
            return None, True
        return (info.client_id if info.kind == kind else None), False

    def _check_client(self, client_id: str, client_secret: str, *, basic: bool) -> str:
        """Authenticate the client and return the token kind it gets."""
        self.token_calls_by_client[client_id] += 1
        headers = {"WWW-Authenticate": 'Basic realm="token"'} if basic else None
        accepted = [self.client_secret]
        if self._rules.storefront_path is not None and same(client_id, self.storefront_client_id):
            kind = KIND_STOREFRONT
        elif same(client_id, self.client_id):
            kind = KIND_API
        elif client_id in self._clients:
            kind = KIND_API
            accepted = self._clients[client_id]
        else:
            raise Rejection(401, "invalid_client", "unknown client_id", headers=headers)
        if not any(same(client_secret, secret) for secret in accepted):
            raise Rejection(401, "invalid_client", "wrong client_secret", headers=headers)
        return kind

    def _check_user(self, username: str, password: str, status: int = 400) -> None:
        if not (same(username, self.username) and same(password, self.password)):
            raise Rejection(status, "invalid_grant", "wrong username or password")

    def _wants_refresh(self, default: bool) -> bool:
        if self.issue_refresh_tokens is not None:
            return self.issue_refresh_tokens
        return default

    def _spend_refresh(self, refresh_token: str, client_id: str) -> tuple[str, bool]:
        """Validate a refresh token; return its kind and whether to issue a new one."""
        info = self._refresh.get(refresh_token)
        if info is None:
            raise Rejection(400, "invalid_grant", "refresh token is invalid", oauth=True)
        if not same(info.client_id, client_id):
            raise Rejection(
                400, "invalid_grant", "refresh token was issued to another client", oauth=True
            )
        if self.rotate_refresh_tokens:
            del self._refresh[refresh_token]
            return info.kind, True
        return info.kind, False

    def _issue(self, kind: str, client_id: str, *, with_refresh: bool) -> dict[str, Any]:
        expires_in = _wire_lifetime(self.lifetime)
        access_token = secrets.token_urlsafe(32)
        # The one rule: the token dies at issue time + exactly what the answer reports.
        self._access[access_token] = _Access(self.clock() + expires_in, kind, client_id)
        self.issued_tokens.add(access_token)
        self.tokens_issued += 1
        payload: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": expires_in,
            "token_type": self._rules.token_type,
        }
        if with_refresh:
            refresh_token = secrets.token_urlsafe(32)
            self._refresh[refresh_token] = _Refresh(kind, client_id)
            self.issued_refresh_tokens.add(refresh_token)
            payload["refresh_token"] = refresh_token
        return payload


@attrs.frozen
class _TokenDesk:
    """A :class:`~._dialects.TokenDesk` on a server: its dialect's only way back into it."""

    _server: TokenLedger

    @property
    def username(self) -> str:
        return self._server.username

    def check_client(self, client_id: str, client_secret: str, *, basic: bool) -> str:
        return self._server._check_client(client_id, client_secret, basic=basic)

    def check_user(self, username: str, password: str, status: int = 400) -> None:
        self._server._check_user(username, password, status)

    @property
    def audience(self) -> str:
        return self._server.audience

    def spend_refresh(self, refresh_token: str, client_id: str) -> tuple[str, bool]:
        return self._server._spend_refresh(refresh_token, client_id)

    def wants_refresh(self, default: bool) -> bool:
        return self._server._wants_refresh(default)

    def issue(self, kind: str, client_id: str, *, with_refresh: bool) -> dict[str, Any]:
        return self._server._issue(kind, client_id, with_refresh=with_refresh)
