"""The 401 rule every client adapter shares: invalidate, then resend at most once.

The aiohttp middleware and :mod:`aiopay_auth.httpx` both answer a 401 with
this one function, so the backoff of an API that refuses fresh tokens too
(kept on the holder, see :meth:`TokenHolder.invalidate
<aiopay_auth.TokenHolder.invalidate>`) and the ``unreplayable`` count mean
the same whichever client sent the request.
"""

from __future__ import annotations

from ._holder import TokenHolder
from ._token import Token


__all__ = ["resend_after_401"]


def resend_after_401(holder: TokenHolder, token: Token, *, replayable: bool) -> bool:
    """Report that *token* got a 401; whether the request may be resent once.

    The token is invalidated in every case (only the first report against
    the current token wakes the refresher). No resend while the holder backs
    off on the current token, when the 401 is for that token or the API
    has refused it too (it refuses fresh tokens: the 401 goes to the
    caller); a late 401 for an older token, while the current one has not
    been refused, is resent with the current one. No resend either when
    the holder kept the token, nor when the body cannot be sent again
    (*replayable* false; counted in ``stats.unreplayable``). The caller
    that resends waits for the next token (:meth:`TokenHolder.get`), counts
    ``stats.recoveries`` and, on a second 401, invalidates that token too.
    """
    streak = holder.refusing
    backing_off = holder.backing_off() and (
        token is holder.current or (streak is not None and streak.refused)
    )
    holder.invalidate(token)  # during a backoff: noted as refused
    if backing_off or holder.current is token:
        return False  # backing off: the holder keeps the token
    if not replayable:
        holder.stats.unreplayable += 1
        return False
    return True
