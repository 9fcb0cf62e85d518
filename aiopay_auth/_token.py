"""The bearer token value object."""

from __future__ import annotations

import attrs

from ._secret import Secret, fingerprint


__all__ = ["Token"]


@attrs.frozen(kw_only=True, eq=False)
class Token:
    """One access token as issued by a provider, ready to stamp on requests.

    Tokens compare by identity: two fetches that return the same string are
    still two tokens, each with its own expiry. Neither the access token,
    the refresh token nor the provider's ``scope`` text appears in ``repr()``.

    Attributes:
        access_token: The bearer token text. Never log it.
        header: The whole ``Authorization`` header value (``"Bearer …"``),
            built once so that stamping a request is one attribute read.
        token_type: The token type as the provider spelled it.
        issued_at: When the request that obtained it was sent, on the
            monotonic clock (``time.monotonic()`` unless a clock is injected).
        expires_at: When it stops being usable, on the same clock.
        refresh_token: A refresh token issued with it, if any.
        scope: The scope the provider granted, if it said. Provider text
            that may echo a credential: kept verbatim, so not in ``repr()``.
        fingerprint: A short non-reversible label, safe to log.
    """

    access_token: str = attrs.field(repr=False)
    header: str = attrs.field(repr=False)
    token_type: str = "Bearer"
    issued_at: float
    expires_at: float
    refresh_token: Secret | None = attrs.field(default=None, repr=False)
    scope: str | None = attrs.field(default=None, repr=False)
    fingerprint: str

    @classmethod
    def bearer(
        cls,
        access_token: str,
        *,
        issued_at: float,
        lifetime: float,
        token_type: str = "Bearer",
        refresh_token: Secret | None = None,
        scope: str | None = None,
    ) -> Token:
        """Build a token from its parts.

        Args:
            access_token: The bearer token text.
            issued_at: Monotonic time the request for it was sent.
            lifetime: Seconds it stays usable from *issued_at*.
            token_type: The type as the provider spelled it.
            refresh_token: A refresh token that came with it.
            scope: The granted scope.

        Returns:
            The token.
        """
        return cls(
            access_token=access_token,
            header="Bearer " + access_token,
            token_type=token_type,
            issued_at=issued_at,
            expires_at=issued_at + lifetime,
            refresh_token=refresh_token,
            scope=scope,
            fingerprint=fingerprint(access_token),
        )

    @property
    def lifetime(self) -> float:
        """Seconds between issue and expiry."""
        return self.expires_at - self.issued_at

    def remaining(self, now: float) -> float:
        """Seconds left until expiry at monotonic time *now* (negative once expired)."""
        return self.expires_at - now
