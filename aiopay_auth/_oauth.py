"""The sans-I/O OAuth 2.0 core: token requests in, tokens or typed errors out.

Nothing here touches a socket or a clock; callers pass the time in. That
keeps every rule of RFC 6749 and of each provider's dialect testable as a
plain function.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import quote_plus, urlencode

import attrs
from yarl import URL

from ._client_auth import client_auth_fields
from ._provider import Provider, reveal
from ._secret import Redactor, Secret
from ._status import classify_status, retryable_status
from ._token import Token
from .exceptions import TokenResponseError


__all__ = [
    "MAX_LIFETIME",
    "MAX_RESPONSE_BYTES",
    "MIN_LIFETIME",
    "WHOLE_SECOND",
    "TokenRequest",
    "basic_credentials",
    "build_token_request",
    "lifetime_from",
    "parse_retry_after",
    "parse_token_response",
]

MAX_LIFETIME = 86400.0
"""The longest lifetime believed, in seconds; larger ``expires_in`` values are cut to it."""

WHOLE_SECOND = 1.0
"""Seconds given up from a whole-second ``expires_in`` of 2 or more (see :func:`lifetime_from`)."""

MIN_LIFETIME = 0.2
"""The shortest lifetime usable, in seconds; a shorter ``expires_in`` is a malformed answer.

Twice the default :attr:`RefreshPolicy.min_fetch_interval
<aiopay_auth.RefreshPolicy.min_fetch_interval>`, so that such a token can
still be refreshed at half its life.
"""

MAX_RESPONSE_BYTES = 64 * 1024
"""Token responses larger than this are refused unread."""

# RFC 6750 §2.1 b64token, loosened to any visible ASCII but the separators
# that could split or inject a header.
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")
_DIGITS = re.compile(r"\s*\+?(\d{1,15})\s*")
_DELAY_SECONDS = re.compile(r"[0-9]{1,15}")

# OAuth error codes (RFC 6749 §5.2) that asking again cannot fix.
_UNHEALABLE = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
    }
)
_HEALABLE = frozenset({"server_error", "temporarily_unavailable", "slow_down"})


def _sealed_headers(
    headers: tuple[tuple[str, str | Secret], ...] | list[tuple[str, str | Secret]],
) -> tuple[tuple[str, Secret], ...]:
    return tuple(
        (name, value if isinstance(value, Secret) else Secret(value)) for name, value in headers
    )


def _sealed_body(body: bytes | Secret) -> Secret:
    # Latin-1 maps every byte to one character and back: any body survives.
    return body if isinstance(body, Secret) else Secret(bytes(body).decode("latin-1"))


@attrs.frozen(kw_only=True)
class TokenRequest:
    """One HTTP request to a token endpoint, as plain data.

    The header values and the body hold the credentials (Basic
    credentials, the client secret, a signed client assertion), so they
    are kept as :class:`~aiopay_auth.Secret` values, like a
    :class:`~aiopay_auth.Provider`'s secrets: ``repr()``,
    :func:`attrs.asdict` and :func:`attrs.astuple` show ``Secret('***')``.
    The :attr:`headers` and :attr:`body` properties give the plain values,
    the one way out, for the code that sends the request.

    Attributes:
        url: Where to POST it.
        grant_type: Which grant it asks with.
    """

    url: URL
    _headers: tuple[tuple[str, Secret], ...] = attrs.field(
        alias="headers", converter=_sealed_headers, repr=False
    )
    _body: Secret = attrs.field(alias="body", converter=_sealed_body, repr=False)
    grant_type: str

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Header name/value pairs, as sent (may hold Basic credentials). Never log them."""
        return tuple((name, value.reveal()) for name, value in self._headers)

    @property
    def body(self) -> bytes:
        """The encoded body, as sent (holds secrets). Never log it."""
        return self._body.reveal().encode("latin-1")


def basic_credentials(client_id: str, client_secret: str) -> str:
    """Return an HTTP Basic ``Authorization`` value for client credentials.

    RFC 6749 §2.3.1: the id and the secret are each form-urlencoded
    before they are joined with ``:`` and base64-encoded, so a secret
    holding ``:``, ``+`` or ``%`` survives the trip.
    """
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def build_token_request(
    provider: Provider,
    *,
    refresh_token: Secret | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> TokenRequest:
    """Build the token request for a provider's primary grant or a refresh.

    Args:
        provider: The provider profile.
        refresh_token: When given, ask with the ``refresh_token`` grant
            (RFC 6749 §6) instead of the primary grant.
        now: Wall-clock time (``time.time()``); needed for a signed client
            assertion (``private_key_jwt``, ``client_secret_jwt``).
        jti: A value never used before; needed for a signed client
            assertion, so that each request carries a fresh one.

    Returns:
        The request to send.
    """
    fields: dict[str, str] = {}
    if refresh_token is not None:
        fields["grant_type"] = "refresh_token"
        fields["refresh_token"] = refresh_token.reveal()
        if provider.username:
            fields["username"] = provider.username
    else:
        fields["grant_type"] = provider.grant_type
        if provider.grant_type == "password":
            # Validated at construction: both are set for this grant.
            fields["username"] = provider.username or ""
            fields["password"] = provider.password.reveal() if provider.password else ""
    if provider.scope:
        fields["scope"] = provider.scope
    headers = [("Accept", "application/json")]
    if provider.client_auth == "basic":
        headers.append(
            (
                "Authorization",
                basic_credentials(provider.client_id, provider.client_secret.reveal()),
            )
        )
    else:
        fields.update(client_auth_fields(provider, now=now, jti=jti))
    for key, value in provider.extra_fields:
        fields.setdefault(key, reveal(value))
    if provider.encoding == "json":
        headers.append(("Content-Type", "application/json"))
        body = json.dumps(fields, separators=(",", ":")).encode()
    else:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = urlencode(fields).encode()
    headers.extend((name, reveal(value)) for name, value in provider.extra_headers)
    return TokenRequest(
        url=provider.token_url,
        headers=tuple(headers),
        body=body,
        grant_type=fields["grant_type"],
    )


def lifetime_from(value: object, default: float) -> float:
    """Turn a response's ``expires_in`` into a lifetime in seconds.

    The rule:

    * missing or ``null``: *default* (the provider's ``default_lifetime``);
    * a whole number of seconds *N* (a JSON integer, or a string of
      digits): *N* - 1 seconds, and 1 second for *N* = 1. A server that
      counts in whole seconds often floors its clock when it issues
      (``exp = floor(now) + N``), so the token may live only a little
      more than *N* - 1 seconds: one second is given up to be sure. A
      1-second token cannot be made safe that way; it is taken as 1 s,
      and such a server may expire it at any time within that second
      (see docs/faults.md);
    * a number with a decimal point (a JSON float): that many seconds,
      exactly;
    * above :data:`MAX_LIFETIME` (one day): cut to one day, so a token
      is re-fetched at least daily whatever the provider claims;
    * below :data:`MIN_LIFETIME` (0.2 s): too short to use, so
      :class:`ValueError` (the response is malformed), rather than a
      token the refresher would have to replace at once;
    * zero, negative, not finite, a boolean, or anything else:
      :class:`ValueError` (the response is malformed).

    Args:
        value: The ``expires_in`` value as decoded from JSON.
        default: The lifetime to assume when it is absent.

    Returns:
        The lifetime in seconds.
    """
    if value is None:
        return default
    seconds: float
    if isinstance(value, bool):
        msg = "expires_in is a boolean"
        raise ValueError(msg)
    whole = True
    if isinstance(value, int):
        # float() of a huge JSON integer overflows; clamp first, the checks below still apply.
        seconds = float(max(-1, min(value, 2 * int(MAX_LIFETIME))))
    elif isinstance(value, float):
        seconds, whole = value, False
    elif isinstance(value, str) and (digits := _DIGITS.fullmatch(value)):
        # Only the digits: int() refuses some of the spaces \s matches ("\x1f").
        seconds = float(int(digits.group(1)))
    else:
        msg = "expires_in is not a number of seconds"
        raise ValueError(msg)
    if not math.isfinite(seconds) or seconds <= 0:
        msg = "expires_in must be a positive number of seconds"
        raise ValueError(msg)
    if whole and seconds >= 2:
        seconds -= WHOLE_SECOND  # the issue time may have been floored to the second
    if seconds < MIN_LIFETIME:
        msg = f"expires_in of {seconds:.3g} s is too short to use (under {MIN_LIFETIME:g} s)"
        raise ValueError(msg)
    return min(seconds, MAX_LIFETIME)


def parse_retry_after(value: str | None, *, wall_now: float) -> float | None:
    """Read a ``Retry-After`` header (RFC 9110 §10.2.3).

    Args:
        value: The header value: delay seconds or an HTTP-date.
        wall_now: The current wall-clock time (``time.time()``), to turn a
            date into a delay.

    Returns:
        The delay in seconds (never negative), or ``None`` when absent or
        unreadable.
    """
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):  # ASCII only: "²".isdigit() is true, float() fails
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall_now)


_NOT_JSON = object()
_JSON_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _decode(body: bytes) -> object:
    """The JSON value of *body*, or ``_NOT_JSON`` (JSON ``null`` decodes to ``None``)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NOT_JSON


def _not_an_object(data: object) -> str:
    if data is _NOT_JSON:
        return "not JSON"
    if data is None:
        return "JSON null, not a JSON object"
    return f"a JSON {_JSON_NAMES.get(type(data), 'value')}, not a JSON object"


def _text(value: object, redact: Redactor) -> str | None:
    return redact.quote(value) if isinstance(value, str) and value.strip() else None


def _redactor(provider: Provider, sent: Secret | None) -> Redactor:
    """Quote provider-supplied text with the provider's own secrets, however short, redacted."""
    basic = basic_credentials(provider.client_id, provider.client_secret.reveal())
    return Redactor((*provider.secrets(), sent, Secret(basic.removeprefix("Basic "))))


def parse_token_response(
    provider: Provider,
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    issued_at: float,
    wall_now: float,
    refresh_token: Secret | None = None,
) -> Token:
    """Turn a token endpoint's answer into a :class:`Token` or a typed error.

    Handles RFC 6749 §5.1 success and §5.2 error responses, the provider's
    envelope hook, ``token_type`` in any letter case and the
    ``expires_in`` rule of :func:`lifetime_from`.

    Args:
        provider: The provider that answered.
        status: The HTTP status.
        headers: The response headers (case-insensitive mapping).
        body: The raw body.
        issued_at: Monotonic time the request was sent; the token's
            lifetime counts from here, so network time is never credited.
        wall_now: Wall-clock time, for ``Retry-After`` dates.
        refresh_token: The refresh token the request carried, if any, so
            that an answer quoting it back is redacted too.

    Returns:
        The token.

    Raises:
        TokenResponseError: The answer is an error or is unusable; its
            ``retryable`` says whether asking again can help.
    """
    name = provider.name
    redact = _redactor(provider, refresh_token)
    retry_after = parse_retry_after(headers.get("Retry-After"), wall_now=wall_now)

    def fail(
        message: str,
        *,
        retryable: bool,
        error: str | None = None,
        description: str | None = None,
    ) -> TokenResponseError:
        return TokenResponseError(
            message,
            provider=name,
            status=status,
            error=error,
            description=description,
            retryable=retryable,
            retry_after=retry_after,
        )

    if len(body) > MAX_RESPONSE_BYTES:
        raise fail(f"token response of {len(body)} bytes is too large", retryable=True)
    data = _decode(body)
    if classify_status(status) != "success":
        error = _text(data.get("error"), redact) if isinstance(data, dict) else None
        description = (
            _text(data.get("error_description"), redact) if isinstance(data, dict) else None
        )
        if error in _HEALABLE:
            retryable = True
        elif error in _UNHEALABLE:
            retryable = False
        else:
            retryable = retryable_status(status)
        detail = f": {error}" if error else ""
        detail += f" ({description})" if description else ""
        if not error and data is _NOT_JSON and body:
            detail = f": {redact.quote(body.decode('utf-8', 'replace'), 80)}"
        raise fail(
            f"token endpoint answered HTTP {status}{detail}",
            retryable=retryable,
            error=error,
            description=description,
        )
    if not isinstance(data, dict):
        raise fail(f"token response is {_not_an_object(data)}", retryable=True)
    if provider.envelope is not None:
        failure = provider.envelope(data)
        if failure is not None:
            code, message = redact.quote(failure[0], 16), redact.quote(failure[1])
            raise fail(
                f"provider reported failure {code}: {message}",
                retryable=True,
                error=code,
                description=message,
            )
    if "error" in data:
        error = _text(data.get("error"), redact)
        raise fail(
            f"token endpoint answered HTTP {status} with error {error}",
            retryable=error in _HEALABLE,
            error=error,
            description=_text(data.get("error_description"), redact),
        )
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not _TOKEN_TEXT.fullmatch(access_token):
        raise fail("token response has no usable access_token", retryable=True)
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        what = type(token_type).__name__
        shown = redact.quote(token_type, 20) if isinstance(token_type, str) else what
        raise fail(f"token_type {shown!r} is not Bearer", retryable=False)
    try:
        lifetime = lifetime_from(data.get("expires_in"), provider.default_lifetime)
    except ValueError as exc:
        raise fail(f"token response: {exc}", retryable=True) from None
    refresh = data.get("refresh_token")
    scope = data.get("scope")
    return Token.bearer(
        access_token,
        issued_at=issued_at,
        lifetime=lifetime,
        token_type=token_type,
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        scope=scope if isinstance(scope, str) else None,
    )
