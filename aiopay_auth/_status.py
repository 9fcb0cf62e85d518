"""What an HTTP status from a token endpoint means: one rule, no I/O, no HTTP client.

Everything that judges a token endpoint's status asks here: the parser
(success or not, retryable or not), health's failure kinds and the
tenants' 429 pause. A payment API's ``401`` in
:class:`~aiopay_auth.BearerAuth` is another rule, about another server:
that the token sent was refused (RFC 6750 §3.1), which nothing here
decides.
"""

from __future__ import annotations

from typing import Literal


__all__ = ["StatusClass", "classify_status", "retryable_status"]

StatusClass = Literal["success", "throttled", "server_error", "rejected", "not_http"]
"""
What a token endpoint's HTTP status says, before its body is read:

* ``success``: 2xx;
* ``throttled``: 429 Too Many Requests;
* ``server_error``: 5xx, 408 Request Timeout or 425 Too Early: the server
  could not handle the request now, and the same request may succeed later;
* ``rejected``: any other status from 100 to 499 (4xx, and 1xx/3xx that a
  token endpoint has no business sending): asking again as is cannot help;
* ``not_http``: outside 100-599, or no status could be read at all
  (``0``): the answer is not HTTP, a bad response.
"""

_LATER = frozenset({408, 425})


def classify_status(status: int) -> StatusClass:
    """Classify a token endpoint's HTTP status (see :data:`StatusClass`)."""
    if not 100 <= status <= 599:
        return "not_http"
    if 200 <= status < 300:
        return "success"
    if status == 429:
        return "throttled"
    if status >= 500 or status in _LATER:
        return "server_error"
    return "rejected"


def retryable_status(status: int) -> bool:
    """Whether asking again later can help, judged by the status alone."""
    return classify_status(status) in ("throttled", "server_error", "not_http")
