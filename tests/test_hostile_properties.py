"""Property tests: whatever bytes a token endpoint sends, the SDK publishes a token or raises typed.

A raw asyncio TCP server on 127.0.0.1 (tests/endpoints.RawEndpoint) sends a
hypothesis-generated status line, headers, body and framing (chunked or
not, malformed or not). The only outcomes allowed are a usable token or an
:class:`~aiopay_auth.exceptions.AuthError` subclass; never another
exception, never a spin, never the provider's secret in a message.
"""

from __future__ import annotations

import gzip
import json
import time

import aiohttp
import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiopay_auth import Provider, RefreshPolicy, Token, TokenManager, TokenUnavailableError
from aiopay_auth._fetch import HttpTokenSource
from aiopay_auth._oauth import MAX_LIFETIME, MIN_LIFETIME
from aiopay_auth.exceptions import AuthError, TokenEndpointError

from .endpoints import RawEndpoint, make_provider


pytestmark = pytest.mark.anyio

SECRET = "hyp-client-Secret-42"
PASSWORD = "hyp-user-Password-42"
SECRETS = (SECRET, PASSWORD)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def provider_at(base: str) -> Provider:
    return make_provider(
        base, client_secret=SECRET, username="hyp-user", password=PASSWORD, client_auth="body"
    )


# --------------------------------------------------------------------------- answers

quoted = st.sampled_from(["", SECRET, PASSWORD, f"x{SECRET}y", "\x1b[2J\u202e"])
text = st.text(max_size=30) | quoted
json_scalar = st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | text
expires_ins = (
    json_scalar
    | st.sampled_from([0.001, 0.05, 0.2, 1, 2, 3600, "3600", 10**12, -1])
    | st.floats(1e-6, 1e6)
)
token_bodies = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True) | json_scalar,
        "token_type": st.sampled_from(["Bearer", "bearer", "mac"]) | json_scalar,
        "expires_in": expires_ins,
        "refresh_token": text,
        "error": st.sampled_from(["invalid_client", "server_error", "slow_down"]) | text,
        "error_description": text,
    },
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    token_bodies,
    token_bodies.map(lambda b: b[: len(b) // 2]),
    st.binary(max_size=200),
    quoted.map(str.encode),
    st.sampled_from([b"null", b"[]", b'"x"', b"{}"]),
)
status_lines = st.one_of(
    st.builds(
        lambda code, reason: f"HTTP/1.1 {code} {reason}".encode(),
        st.sampled_from([200, 201, 204, 301, 400, 401, 408, 425, 429, 500, 503])
        | st.integers(0, 999),
        st.sampled_from(["OK", "", "Nope", SECRET]),
    ),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"HTTP/1.0 200 OK", b"HTTP/2 200", b"ICY 200 OK", b"GARBAGE"]),
)
extra_headers = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Content-Type: application/json",
                b"Content-Type: text/html",
                b"Retry-After: 0",
                b"Retry-After: 1",
                b"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT",
                b"Retry-After: soon",
                b"Cache-Control: no-store",
                b"No Colon Here",
                b": empty-name",
                b"Content-Length: abc",
                b"Transfer-Encoding: gzip, chunked",
            ]
        ),
        st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    ),
    max_size=3,
)
framings = st.sampled_from(
    ["content-length", "chunked", "bad-chunk", "close", "short", "gzip", "bad-gzip"]
)


well_formed_tokens = st.fixed_dictionaries(
    {
        # A new token on every connection (see RawEndpoint), or the same one.
        "access_token": st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True) | st.just("tok-@@@@"),
        "token_type": st.just("Bearer"),
        "expires_in": expires_ins,
    }
).map(lambda d: json.dumps(d).encode())


def http_200(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """One raw HTTP answer, well-formed or not; a third are well-formed token answers."""
    if draw(st.integers(0, 2)) == 0:
        return http_200(draw(well_formed_tokens))
    status = draw(status_lines)
    headers = list(draw(extra_headers))
    body = draw(bodies)
    framing = draw(framings)
    if framing in ("gzip", "bad-gzip"):
        headers.append(b"Content-Encoding: gzip")
        body = gzip.compress(body) if framing == "gzip" else body + b"not-gzip"
        framing = "content-length"
    if framing == "content-length":
        headers.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "short":
        headers.append(b"Content-Length: %d" % (len(body) + 10))
        payload = body
    elif framing in ("chunked", "bad-chunk"):
        headers.append(b"Transfer-Encoding: chunked")
        cut = draw(st.integers(0, len(body)))
        pieces = [piece for piece in (body[:cut], body[cut:]) if piece]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        if framing == "bad-chunk":
            payload = b"zz\r\n" + payload
        payload += b"0\r\n\r\n"
    else:  # close-delimited
        payload = body
    return status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + payload


# --------------------------------------------------------------------------- checks


def assert_no_secret(*texts: str | None) -> None:
    for text in texts:
        if text is None:
            continue
        for secret in SECRETS:
            assert secret not in text, text


def check_outcome(outcome: Token | BaseException) -> None:
    if isinstance(outcome, Token):
        assert outcome.access_token
        # expires_at - issued_at: exact up to the rounding of one float addition.
        slack = 1e-9 * max(1.0, abs(outcome.issued_at))
        assert MIN_LIFETIME - slack <= outcome.lifetime <= MAX_LIFETIME + slack
        assert outcome.token_type.lower() == "bearer"
        return
    assert isinstance(outcome, TokenEndpointError), repr(outcome)
    assert isinstance(outcome.retryable, bool)
    message = str(outcome)
    assert message.isprintable(), repr(message)
    assert_no_secret(
        message,
        repr(outcome),
        getattr(outcome, "description", None),
        getattr(outcome, "error", None),
    )


@SETTINGS
@given(answer=answers())
async def test_any_answer_gives_a_usable_token_or_a_typed_error(
    raw: RawEndpoint, answer: bytes
) -> None:
    raw.answer = answer
    outcome: Token | BaseException
    async with aiohttp.ClientSession() as session:
        source = HttpTokenSource(provider_at(raw.base), session, timeout=2.0)
        try:
            outcome = await source.fetch(None)
        except Exception as exc:
            outcome = exc
    check_outcome(outcome)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=answers())
@example(answer=http_200(b'{"access_token": "tok-@@@@", "expires_in": 0.001}'))
@example(answer=http_200(b'{"access_token": "same", "expires_in": 0.2}'))
@example(answer=b"HTTP/1.1 503 No\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
@example(answer=b"GARBAGE\r\n\r\n")
async def test_no_answer_makes_the_refresher_spin_or_leak(raw: RawEndpoint, answer: bytes) -> None:
    raw.answer = answer
    before = raw.connections
    policy = RefreshPolicy(fetch_timeout=2.0, wait_timeout=0.3)
    started = time.monotonic()
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_at(raw.base))
        waited: Token | TokenUnavailableError
        try:
            waited = await holder.get()
        except TokenUnavailableError as err:
            waited = err
        if isinstance(waited, Token):
            check_outcome(waited)
        else:
            assert_no_secret(str(waited), repr(waited))
            assert str(waited).isprintable()
        await anyio.sleep(max(0.0, 0.3 - (time.monotonic() - started)))
        health = holder.health()
    elapsed = time.monotonic() - started
    calls = raw.connections - before
    assert calls <= elapsed / policy.min_fetch_interval + 1, (calls, elapsed)
    assert_no_secret(health.last_error)
    assert health.last_error is None or health.last_error.isprintable()
    assert isinstance(holder.last_error, AuthError | None)
