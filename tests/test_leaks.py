"""No secret in a kept error's chain, frames, repr, or in any encoding of quoted text.

Hostile token endpoints (independent loopback servers from tests/endpoints.py,
written from RFC 6749 §5.2, not FakeProvider) echo what they received: the
client secret in the body, or the Basic credentials.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
import structlog
from aiohttp import web

from aiopay_auth import Health, RefreshPolicy, TokenManager, TokenUnavailableError
from aiopay_auth._oauth import basic_credentials

from .endpoints import CLIENT_ID, CLIENT_SECRET, RawEndpoint, WebEndpoint, make_provider


pytestmark = pytest.mark.anyio

BASIC = basic_credentials(CLIENT_ID, CLIENT_SECRET).removeprefix("Basic ")
SHOWN = (CLIENT_SECRET, quote_plus(CLIENT_SECRET), BASIC)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        current = pending.pop()
        if id(current) not in seen:
            seen.add(id(current))
            yield current
            pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _outside_this_file(tb: TracebackType | None) -> TracebackType | None:
    # This test's own frames hold the secret (the provider's arguments).
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _everything_shown(err: TokenUnavailableError) -> str:
    """What a logger could print of *err*: formatted with locals, dict tracebacks, reprs."""
    tb = _outside_this_file(err.__traceback__)
    err = err.with_traceback(tb)
    plain = "".join(traceback.format_exception(err))
    with_locals = "".join(
        traceback.TracebackException.from_exception(err, capture_locals=True).format()
    )
    dicts = structlog.tracebacks.ExceptionDictTransformer(show_locals=True)((type(err), err, tb))
    reprs = " ".join(repr(e) + repr(vars(e)) for e in _chain(err))
    return "\n".join((plain, with_locals, json.dumps(dicts, default=repr), reprs))


async def _unavailable(base: str, client_auth: str) -> TokenUnavailableError:
    policy = RefreshPolicy(wait_timeout=0.5)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(base, client_auth=client_auth))
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get()
    return caught.value


@pytest.mark.parametrize("client_auth", ["body", "basic"])
async def test_malformed_http_echoing_the_request_leaves_no_secret_in_the_chain(
    client_auth: str,
) -> None:
    # A header line without a colon quoting the request body and the
    # Authorization header: aiohttp's parser error quotes those raw bytes,
    # and its repr shows the request headers.
    raw = RawEndpoint()
    echo = f"client_secret={quote_plus(CLIENT_SECRET)} Authorization: Basic {BASIC}".encode()
    raw.answer = b"HTTP/1.1 200 OK\r\nX-Echo " + echo + b"\r\nContent-Length: 2\r\n\r\n{}"
    await raw.start()
    try:
        err = await _unavailable(raw.base, client_auth)
    finally:
        await raw.stop()
    last = err.last_error
    assert last is not None
    assert "malformed HTTP" in str(last)
    assert last.__cause__ is None
    assert last.__context__ is None
    shown = _everything_shown(err)
    assert "BadHttpMessage" in shown or "Error" in shown  # the type is named
    for secret in SHOWN:
        assert secret not in shown


@pytest.mark.parametrize("client_auth", ["body", "basic"])
async def test_not_http_and_a_dropped_connection_chain_no_aiohttp_error(client_auth: str) -> None:
    raw = RawEndpoint()
    raw.answer = b"HTTX/1.1 200 OK\r\n\r\n"
    await raw.start()
    try:
        err = await _unavailable(raw.base, client_auth)
        raw.answer, raw.abort = b"", True
        dropped = await _unavailable(raw.base, client_auth)
    finally:
        await raw.stop()
    for each in (err, dropped):
        assert each.last_error is not None
        assert each.last_error.__cause__ is None
        assert each.last_error.__context__ is None
        shown = _everything_shown(each)
        for secret in SHOWN:
            assert secret not in shown
    assert "failed (ServerDisconnectedError)" in str(dropped)


async def test_a_400_echoing_the_body_leaves_no_secret_in_frames_or_locals() -> None:
    # Red team s01 case A and s11: the raw body stays in the locals of
    # parse_token_response's frames unless the kept error drops them.
    endpoint = WebEndpoint()

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        given = re.search(r"client_secret=([^&]*)", body)
        assert given is not None
        text = "cannot parse request: " + body + " wrong secret " + given.group(1)
        return web.Response(status=400, text=text)

    endpoint.handler = echo
    await endpoint.start()
    try:
        err = await _unavailable(endpoint.base, "body")
    finally:
        await endpoint.stop()
    assert err.last_error is not None
    assert err.last_error.__traceback__ is None
    shown = _everything_shown(err)
    assert "TokenResponseError" in shown
    for secret in SHOWN:
        assert secret not in shown


# ---------------------------------------------------------------------------
# Red team s02: the secret echoed in an equivalent encoding.

ECHO_SECRET = "pa/ss w0rd!&<x>\"'"

FORMS: dict[str, Callable[[str], str]] = {
    "php-json-escaped-slash": lambda s: (
        "<html>" + json.dumps({"client_secret": s}).replace("/", "\\/") + "</html>"
    ),
    "json-unicode-escape": lambda s: '{"secret": "' + "".join(f"\\u{ord(c):04x}" for c in s) + '"}',
    "lowercase-percent": lambda s: "bad secret " + quote(s, safe="").lower(),
    "encodeURIComponent": lambda s: "bad secret " + quote(s, safe="-_.!~*'()"),
    "quote-plus-lowercase": lambda s: "bad secret " + quote_plus(s).lower(),
    "base64": lambda s: "bad secret " + base64.b64encode(s.encode()).decode(),
    "base64-urlsafe-no-padding": lambda s: (
        "bad secret " + base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")
    ),
    # Red team pass 2: an HTML error page escaping what it quotes.
    "html-escaped": lambda s: "<p>bad secret " + html.escape(s) + "</p>",
    "owasp-hex-entities": lambda s: (
        "<p>bad secret " + "".join(c if c.isalnum() else f"&#x{ord(c):02X};" for c in s) + "</p>"
    ),
    "json-description-html-escaped": lambda s: json.dumps(
        {"error": "invalid_client", "error_description": "bad secret " + html.escape(s)}
    ),
    "basic-no-padding": lambda s: (
        "bad auth " + base64.b64encode(f"{CLIENT_ID}:{quote_plus(s)}".encode()).decode().rstrip("=")
    ),
}


def _decodes_to_secret(text: str) -> bool:
    candidates = [text, text.replace("\\/", "/"), unquote(text), unquote_plus(text)]
    candidates += [html.unescape(c) for c in candidates]
    for literal in re.findall(r'"(?:[^"\\]|\\.)*"', text):
        with contextlib.suppress(ValueError):
            candidates.append(json.loads(literal))
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}={0,2}", text):
        for pad in ("", "=", "=="):
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                with contextlib.suppress(ValueError):
                    candidates.append(decode(run + pad).decode("utf-8", "replace"))
    return any(ECHO_SECRET in c or quote_plus(ECHO_SECRET) in c for c in candidates)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + repr(vars(record)))


@pytest.mark.parametrize("form", list(FORMS))
async def test_a_secret_echoed_in_an_equivalent_encoding_is_redacted(form: str) -> None:
    endpoint = WebEndpoint()
    make = FORMS[form]

    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=400, text=make(ECHO_SECRET), content_type="text/html")

    endpoint.handler = answer
    await endpoint.start()
    capture = _Capture()
    logger = logging.getLogger("aiopay_auth")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    health: Health | None = None
    try:
        async with TokenManager(policy=RefreshPolicy(wait_timeout=0.5)) as tokens:
            provider = make_provider(endpoint.base, client_secret=ECHO_SECRET, client_auth="basic")
            holder = tokens.add(provider)
            with pytest.raises(TokenUnavailableError) as caught:
                await holder.get()
            health = holder.health()
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        await endpoint.stop()
    assert _decodes_to_secret(make(ECHO_SECRET))  # the form does quote the secret
    assert health is not None
    assert health.last_error is not None
    assert not _decodes_to_secret(str(caught.value))
    assert not _decodes_to_secret(health.last_error)
    assert not _decodes_to_secret(repr(health))
    assert capture.lines
    assert not _decodes_to_secret("\n".join(capture.lines))
