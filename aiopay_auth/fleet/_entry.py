"""A token as stored in Redis, and the rules that decide whether to believe one.

Pure logic, no I/O. A stored entry is read with the same checks as a
provider's answer (the token text, the lifetime rule and its one-day cap,
both from :mod:`aiopay_auth._oauth`), plus checks on its wall-clock times:
an entry that fails any of them is *absent*, never a crash.
"""

from __future__ import annotations

import json
import math

import attrs

from .._oauth import _TOKEN_TEXT, lifetime_from
from .._secret import Secret
from .._token import Token


__all__ = ["Entry", "entry_from_json", "entry_to_json"]


class EntryRefused(ValueError):
    """Why a stored entry is treated as absent; the text never holds a token."""


@attrs.frozen
class Entry:
    """A token as stored in Redis: wall-clock times, so any host can read it.

    Attributes:
        access_token: The bearer token text.
        token_type: ``Bearer``, as the provider spelled it.
        issued_wall: Wall-clock time the token request was sent.
        expires_wall: Wall-clock time it stops being usable.
        refresh_token: The fleet's newest refresh token, if any.
        scope: The granted scope, if the provider said.
    """

    access_token: str = attrs.field(repr=False)
    token_type: str
    issued_wall: float
    expires_wall: float
    refresh_token: str | None = attrs.field(repr=False)
    scope: str | None

    def to_token(self, *, clock: float, wall: float) -> Token:
        """Turn this entry into a token on the monotonic *clock*, read at wall-clock *wall*.

        An issue time a little in this host's future (within the tolerance
        :func:`entry_from_json` allowed) counts as now: the expiry is never
        moved later than the entry says.
        """
        issued = min(self.issued_wall, wall)
        return Token.bearer(
            self.access_token,
            issued_at=clock - (wall - issued),
            lifetime=self.expires_wall - issued,
            token_type=self.token_type,
            refresh_token=Secret(self.refresh_token) if self.refresh_token else None,
            scope=self.scope,
        )

    @classmethod
    def of(cls, token: Token, *, clock: float, wall: float, refresh_token: str | None) -> Entry:
        """The entry for *token*, read at monotonic *clock* and wall-clock *wall*."""
        issued_wall = wall - (clock - token.issued_at)
        return cls(
            access_token=token.access_token,
            token_type=token.token_type,
            issued_wall=issued_wall,
            expires_wall=issued_wall + token.lifetime,
            refresh_token=refresh_token,
            scope=token.scope,
        )


def entry_to_json(entry: Entry) -> bytes:
    """Serialize one entry (before any encryption)."""
    return json.dumps(attrs.asdict(entry)).encode()


def entry_from_json(raw: bytes, *, wall: float, tolerance: float) -> Entry:
    """Read one stored entry, believing it only if a provider's answer would pass.

    Args:
        raw: The decrypted bytes.
        wall: This host's wall-clock time now.
        tolerance: How far in this host's future an issue time may lie
            (clock skew between hosts), in seconds.

    Returns:
        The entry, its expiry cut to the one-day cap.

    Raises:
        EntryRefused: It is not JSON, a field has the wrong type, the token
            text could split a header, the lifetime breaks the lifetime rule,
            it was issued in the future beyond *tolerance*, or it expired.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        raise EntryRefused("not JSON") from None
    if not isinstance(data, dict):
        raise EntryRefused("not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not _TOKEN_TEXT.fullmatch(access_token):
        raise EntryRefused("no usable access_token")
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise EntryRefused("token_type is not Bearer")
    issued, expires = _wall_time(data, "issued_wall"), _wall_time(data, "expires_wall")
    try:
        lifetime = lifetime_from(expires - issued, 0.0)
    except ValueError as exc:
        raise EntryRefused(f"lifetime: {exc}") from None
    refresh_token, scope = data.get("refresh_token"), data.get("scope")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise EntryRefused("refresh_token is not text")
    if scope is not None and not isinstance(scope, str):
        raise EntryRefused("scope is not text")
    if issued > wall + tolerance:
        raise EntryRefused("issued in the future beyond the clock tolerance")
    if issued + lifetime <= wall:
        raise EntryRefused("expired")
    return Entry(
        access_token=access_token,
        token_type=token_type,
        issued_wall=issued,
        expires_wall=issued + lifetime,
        refresh_token=refresh_token or None,
        scope=scope,
    )


def _wall_time(data: dict[str, object], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntryRefused(f"{name} is not a number")
    try:
        seconds = float(value)
    except OverflowError:
        raise EntryRefused(f"{name} is out of range") from None
    if not math.isfinite(seconds):
        raise EntryRefused(f"{name} is not finite")
    return seconds
