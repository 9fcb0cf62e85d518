"""Hostile token endpoints, written from RFC 6749 §5.1/§5.2 and RFC 9112, not from FakeProvider.

Two kinds of independent servers on 127.0.0.1: a plain ``aiohttp.web`` app
whose token handler each test sets, and a raw asyncio TCP server that
answers with whatever bytes a test gives it (broken HTTP included).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import unicodedata

import aiohttp
import anyio
import pytest
from aiohttp import web

from aiopay_auth import (
    Provider,
    RefreshPolicy,
    Secret,
    Token,
    TokenHolder,
    TokenManager,
    TokenSource,
    TokenUnavailableError,
)
from aiopay_auth._fetch import HttpTokenSource
from aiopay_auth._health import failure_kind
from aiopay_auth.exceptions import AuthError, TokenRequestError, TokenResponseError

from .endpoints import RawEndpoint, WebEndpoint, make_provider, oauth_error, token_json
from .helpers import eventually


pytestmark = pytest.mark.anyio


async def fetch_once(provider: Provider, *, timeout: float = 5.0) -> AuthError:
    """Ask once through the SDK's HTTP token source; return the typed error it raised."""
    async with aiohttp.ClientSession() as session:
        source = HttpTokenSource(provider, session, timeout=timeout)
        with pytest.raises(AuthError) as caught:
            await source.fetch(None)
    return caught.value


def invisible(text: str) -> list[str]:
    """The characters of *text* that are controls or invisible format characters."""
    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs")]


# --------------------------------------------------------------------------- not HTTP vs dropped

NOT_HTTP = {
    "garbage-status-line": b"GARBAGE\r\n\r\n",
    "json-without-status-line": b'{"access_token":"x","token_type":"Bearer"}',
    "header-without-colon": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNo Colon Here\r\n\r\n{}",
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    "bad-gzip-body": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
}


@pytest.mark.parametrize("answer", list(NOT_HTTP.values()), ids=list(NOT_HTTP))
async def test_an_answer_that_is_not_http_is_a_bad_response(
    raw: RawEndpoint, answer: bytes
) -> None:
    raw.answer = answer
    err = await fetch_once(make_provider(raw.base))
    assert isinstance(err, TokenResponseError), repr(err)
    assert err.retryable
    assert "bad_response" == failure_kind(err)
    assert "malformed HTTP" in str(err)


DROPPED = {
    "closed-before-answer": (b"", False),
    "reset-before-answer": (b"", True),
    "closed-mid-body": (b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"access_', False),
    "closed-mid-chunked-body": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{"access_',
        False,
    ),
}


@pytest.mark.parametrize(("answer", "abort"), list(DROPPED.values()), ids=list(DROPPED))
async def test_a_dropped_connection_is_a_connection_failure(
    raw: RawEndpoint, answer: bytes, abort: bool
) -> None:
    raw.answer, raw.abort = answer, abort
    err = await fetch_once(make_provider(raw.base))
    assert isinstance(err, TokenRequestError), repr(err)
    assert "connection" == failure_kind(err)


async def test_425_too_early_is_retryable_and_classified_as_a_server_error(
    endpoint: WebEndpoint,
) -> None:
    async def too_early(_: web.Request) -> web.Response:
        return web.Response(status=425, text="too early")

    endpoint.handler = too_early
    err = await fetch_once(make_provider(endpoint.base))
    assert isinstance(err, TokenResponseError)
    assert err.retryable
    assert "server_error" == failure_kind(err)


# --------------------------------------------------------------------------- provider text

HOSTILE_TEXT = (
    "bad\x1b[2J\x1b]0;title\x07 \u202ereversed\u202c \u2066iso\u2069 \u200emark\u200f"
    " c1\x85\x9b end\x00\x7f"
)


async def test_control_and_bidi_characters_never_reach_messages_or_health(
    endpoint: WebEndpoint,
) -> None:
    async def refuse(_: web.Request) -> web.Response:
        return oauth_error(400, "invalid_request", HOSTILE_TEXT)

    endpoint.handler = refuse
    policy = RefreshPolicy(wait_timeout=5)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get()
        health = holder.health()
    err = caught.value
    assert health.last_error is not None
    for text in (str(err), str(err.last_error), health.last_error):
        assert "reversed" in text  # the words survive...
        assert [] == invisible(text)  # ...the controls and bidi marks do not


async def test_a_json_null_body_is_reported_as_null_not_as_not_json(
    endpoint: WebEndpoint,
) -> None:
    async def null(_: web.Request) -> web.Response:
        return web.Response(text="null", content_type="application/json")

    endpoint.handler = null
    err = await fetch_once(make_provider(endpoint.base))
    assert isinstance(err, TokenResponseError)
    assert "JSON null" in str(err)
    assert "not JSON" not in str(err)
    assert "bad_response" == failure_kind(err)


# --------------------------------------------------------------------------- no spin


class Recording:
    """A token source wrapper that notes when each token request starts."""

    def __init__(self, inner: TokenSource) -> None:
        self.inner = inner
        self.starts: list[float] = []

    async def fetch(self, refresh_token: Secret | None) -> Token:
        self.starts.append(time.monotonic())
        return await self.inner.fetch(refresh_token)


@pytest.mark.parametrize("expires_in", [1e-6, 0.001, 0.05])
async def test_a_lifetime_too_short_to_use_is_a_bad_response_backed_off(
    endpoint: WebEndpoint, expires_in: float
) -> None:
    async def tiny(_: web.Request) -> web.Response:
        return token_json(f"tok-{len(endpoint.calls)}", expires_in)

    endpoint.handler = tiny
    policy = RefreshPolicy()
    window = 1.0
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        # The window opens at the first refused answer, however slow a loaded
        # machine is to get there, so the bound below counts only the refresher.
        await eventually(lambda: holder.health().failures >= 1, within=10)
        started, before = time.monotonic(), len(endpoint.calls)
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get(timeout=window)  # no usable token ever comes
        elapsed = time.monotonic() - started
        calls = len(endpoint.calls) - before
    # Today's code asked about 600 times a second here. The floor proves at
    # most elapsed / min_fetch_interval + 1; the backoff keeps it far lower:
    # retries 0.25-0.5 s, then 0.5-1 s after the first failure.
    assert calls <= elapsed / policy.min_fetch_interval + 1
    assert calls <= 3
    assert "too short to use" in str(caught.value)
    # Every answer that was classified is a bad response (one may still have
    # been in flight when the manager closed, never classified).
    stats = holder.health()
    assert {"bad_response": stats.failures} == holder.health().failures_by_kind
    assert 0 <= stats.fetches - stats.failures <= 1
    assert len(endpoint.calls) <= stats.fetches


async def _answer_same_token(endpoint: WebEndpoint, _: web.Request) -> web.Response:
    return token_json("always-the-same", 0.2)


async def _answer_503_retry_after_0(endpoint: WebEndpoint, _: web.Request) -> web.Response:
    return web.json_response(
        {"error": "temporarily_unavailable"}, status=503, headers={"Retry-After": "0"}
    )


async def _answer_tiny_lifetime(endpoint: WebEndpoint, _: web.Request) -> web.Response:
    return token_json(f"tok-{len(endpoint.calls)}", 0.001)


async def _answer_tokens_the_api_refuses(endpoint: WebEndpoint, _: web.Request) -> web.Response:
    return token_json(f"tok-{len(endpoint.calls)}", 60)


SCENARIOS = {
    "same-token-short-life": _answer_same_token,
    "503-retry-after-0": _answer_503_retry_after_0,
    "tiny-lifetime": _answer_tiny_lifetime,
    "401-on-every-api-request": _answer_tokens_the_api_refuses,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_no_answer_drives_token_requests_faster_than_the_floor(scenario: str) -> None:
    endpoint = WebEndpoint()
    endpoint.api_status = 401
    await endpoint.start()
    answer = SCENARIOS[scenario]

    async def handler(request: web.Request) -> web.Response:
        return await answer(endpoint, request)

    endpoint.handler = handler
    # Backoff out of the way: only the floor stands between the server and a spin.
    policy = RefreshPolicy(backoff_initial=0.001, backoff_max=0.001, min_fetch_interval=0.1)
    recorders: list[Recording] = []

    def record(_: TokenHolder, inner: TokenSource) -> Recording:
        recorders.append(Recording(inner))
        return recorders[0]

    window = 1.0
    try:
        async with TokenManager(policy=policy, token_source=record) as tokens:
            holder = tokens.add(make_provider(endpoint.base))
            http = tokens.session(holder, limit=10)

            async def worker() -> None:
                with contextlib.suppress(TokenUnavailableError):
                    while True:
                        async with http.get(f"{endpoint.base}/api/pay") as resp:
                            await resp.read()

            async with anyio.create_task_group() as tg:
                if scenario.startswith("401"):
                    for _ in range(10):
                        tg.start_soon(worker)
                await anyio.sleep(window)
                tg.cancel_scope.cancel()
    finally:
        await endpoint.stop()
    starts = recorders[0].starts
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 3, starts  # it kept asking...
    assert min(gaps) >= policy.min_fetch_interval  # ...never faster than the floor
    assert len(endpoint.calls) <= window / policy.min_fetch_interval + 2


# --------------------------------------------------------------------------- whole-second expiry


class FlooringServer:
    """A token server that counts in whole seconds, as many do.

    It issues ``exp = floor(time.time()) + ttl`` and says ``expires_in: ttl``
    (RFC 6749 §5.1), so a token lives anywhere in ``(ttl - 1, ttl]``. Its API
    refuses a token at or after ``exp`` with 401 (RFC 6750 §3.1). It keeps
    one live token per client: while one is live, the token endpoint answers
    503 ``temporarily_unavailable``, so the SDK must use each token up to
    what it believes is the end of its life. It also answers 503 when the
    second's fraction is outside [0.3, 0.9): the slack between the SDK's
    belief and ``exp`` is then at least 0.1 s, so the count below measures
    the lifetime rule, not a request in flight across the expiry instant (a
    race no lifetime rule can remove).
    """

    def __init__(self, endpoint: WebEndpoint, ttl: int) -> None:
        self.ttl = ttl
        self.expiry: dict[str, float] = {}
        self.latest_exp = 0.0
        self.issued = 0
        self.api_ok = 0
        self.api_refused_expired = 0
        endpoint.handler = self.token

    async def token(self, _: web.Request) -> web.Response:
        now = time.time()
        if now < self.latest_exp or not 0.3 <= now % 1 < 0.9:
            return oauth_error(503, "temporarily_unavailable")
        self.issued += 1
        access_token = f"floored-{self.issued}-{now:.3f}"
        self.latest_exp = self.expiry[access_token] = math.floor(now) + self.ttl
        return token_json(access_token, self.ttl)

    async def api(self, request: web.Request) -> web.Response:
        scheme, _, access_token = request.headers.get("Authorization", "").partition(" ")
        exp = self.expiry.get(access_token)
        if scheme != "Bearer" or exp is None:
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if time.time() >= exp:
            self.api_refused_expired += 1
            challenge = 'Bearer error="invalid_token", error_description="expired"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        self.api_ok += 1
        return web.Response(text="ok")


@pytest.mark.parametrize("ttl", [2, 3])
async def test_whole_second_expiry_from_a_flooring_server_is_never_overstated(ttl: int) -> None:
    endpoint = WebEndpoint()
    server = FlooringServer(endpoint, ttl)
    app = web.Application()
    app.router.add_get("/pay/{tail:.*}", server.api)
    await endpoint.start(app)
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.2, wait_timeout=10)
    try:
        async with TokenManager(policy=policy) as tokens:
            holder = tokens.add(make_provider(endpoint.base, api=f"{endpoint.base}/pay"))
            http = tokens.session(holder, limit=20)

            async def worker(n: int) -> None:
                while True:
                    async with http.get(f"{endpoint.base}/pay/{n}") as resp:
                        await resp.read()
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(worker, n)
                # Three tokens: two whole cycles of use up to the believed expiry.
                with anyio.fail_after(6 * ttl + 5):
                    while server.issued < 3:  # noqa: ASYNC110 - polling a plain server counter
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
    finally:
        await endpoint.stop()
    assert server.api_ok > 100
    assert 0 == server.api_refused_expired
    assert 0 == holder.health().recoveries
