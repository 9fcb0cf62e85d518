"""A provider's health, derived from its holder without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from ._status import classify_status
from .exceptions import (
    AuthError,
    ConfigError,
    TokenRequestError,
    TokenResponseError,
    TokenTLSError,
)


__all__ = ["FailureKind", "Health", "HealthState", "failure_kind"]

HealthState = Literal["starting", "fresh", "refreshing", "degraded", "failing", "idle", "closed"]
"""
Where a provider stands:

* ``starting``: the first token is being fetched;
* ``fresh``: a usable token, and the last fetch succeeded;
* ``refreshing``: a fetch is in flight for a new token: the current one is
  still usable, or it expired or was refused (401) and requests wait for the
  next;
* ``degraded``: serving a still-usable token while refreshes fail;
* ``failing``: no usable token, and the last fetch failed;
* ``idle``: a tenant with no request for its set's ``idle_after``: not
  refreshed, no token held; its next request waits for one fetch (see
  :meth:`TokenManager.add_tenants <aiopay_auth.TokenManager.add_tenants>`);
* ``closed``: the manager has closed.
"""

FailureKind = Literal[
    "timeout",
    "connection",
    "tls",
    "throttled",
    "server_error",
    "bad_response",
    "provider_failure",
    "rejected",
    "config",
    "unexpected",
]
"""
What kind of failure a fetch met:

* ``timeout``: no answer in time (connect or read);
* ``connection``: refused, reset or dropped (also mid-body);
* ``tls``: TLS refused (certificate not trusted, client certificate
  missing or refused): :class:`~aiopay_auth.exceptions.TokenTLSError`;
* ``throttled``: HTTP 429;
* ``server_error``: HTTP 5xx, 408 or 425;
* ``bad_response``: an answer that is not HTTP (a garbled status line or
  headers, a broken chunked or compressed body), or a 2xx answer that is
  not a usable token (not JSON, truncated, no ``access_token``, bad
  ``expires_in``);
* ``provider_failure``: a 2xx answer whose envelope or ``error`` field
  says the request failed (Pay-me ``success: false``);
* ``rejected``: any other 4xx, such as ``invalid_client``;
* ``config``: a :class:`~aiopay_auth.ConfigError`, a set-up that cannot
  work: a proxy from the environment (``trust_env``) that is malformed or
  not ``http://``, or a custom token source's own; never retried as an
  outage;
* ``unexpected``: a bug or an error outside these, in the refresher or a
  custom token source.
"""


def failure_kind(error: AuthError | ConfigError) -> FailureKind:
    """Classify a fetch failure (see :data:`FailureKind`)."""
    if isinstance(error, TokenTLSError):
        return "tls"
    if isinstance(error, TokenRequestError):
        return "timeout" if error.timed_out else "connection"
    if isinstance(error, TokenResponseError):
        status = classify_status(error.status)
        if status == "success":
            return "provider_failure" if error.error else "bad_response"
        if status == "not_http":
            return "bad_response"
        return status
    if isinstance(error, ConfigError):
        return "config"
    return "unexpected"


@attrs.frozen(kw_only=True)
class Health:
    """A snapshot of one provider's state and counters, for a worker's metrics.

    Taken by :meth:`TokenHolder.health <aiopay_auth.TokenHolder.health>`:
    no I/O, no await, safe to call on every metrics scrape.

    Attributes:
        provider: The provider's name.
        state: See :data:`HealthState`.
        expires_in: Seconds until the current token expires (negative once
            expired), or ``None`` without a token.
        fetches: Token requests sent.
        failures: Token requests that failed.
        failures_by_kind: The failures counted by :data:`FailureKind`.
        consecutive_failures: Failures since the last success.
        refreshes: Tokens published after the first one.
        invalidations: Tokens dropped after a 401.
        recoveries: 401s answered by resending the request with the next
            token (counted when the resend is decided).
        waits: Requests that had to wait for a token.
        max_wait: The longest such wait, in seconds.
        wait_time: Seconds those waits lasted, in total (``wait_time /
            waits`` is the mean wait).
        last_error: The last failure's message (never a secret), if the
            last fetch failed.
        last_error_kind: Its kind.
        store: A shared token store's state (``"shared"`` or ``"local"``),
            ``None`` without one.
        refused_tokens: Tokens the API refused (401) for the first time.
        refusal_streak: Tokens in a row that ended by a 401 rather than a
            normal refresh; 2 or more means the API refuses fresh tokens
            too (on some paths at least), 0 that the last token ended well.
        refusal_backoff: Seconds left during which 401s are handed to
            callers without a resend or a new token (0 when not backing
            off; see ``TokenHolder.invalidate``).
        unreplayable: 401s handed to the caller without a resend because
            the request's body could not be sent again.
    """

    provider: str
    state: HealthState
    expires_in: float | None
    fetches: int
    failures: int
    failures_by_kind: Mapping[FailureKind, int]
    consecutive_failures: int
    refreshes: int
    invalidations: int
    recoveries: int
    waits: int
    max_wait: float
    last_error: str | None
    last_error_kind: FailureKind | None
    store: str | None = None
    refused_tokens: int = 0
    refusal_streak: int = 0
    refusal_backoff: float = 0.0
    unreplayable: int = 0
    wait_time: float = 0.0
