"""The core promises, held by both clients: the aiohttp middleware and aiopay_auth.httpx.

Each test runs once per client through one small adapter (:func:`connect`:
``send(method, url, body)`` returning the status and the JSON answer)
against the independent RFC 6749 / RFC 6750 server of ``tests/hostile.py``,
which records the ``Authorization`` and the body of every request it gets.
The tests after them are httpx's own: its hook, its sync client, its
``next_request``, the core imported without httpx.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import httpx
import pytest
from aiohttp import web
from yarl import URL

from aiopay_auth import (
    ConfigError,
    RefreshPolicy,
    TokenHolder,
    TokenManager,
    TokenUnavailableError,
)
from aiopay_auth.httpx import BearerAuth, replayable
from aiopay_auth.providers import generic

from .helpers import ManualClock, eventually
from .hostile import Api, serving


pytestmark = pytest.mark.anyio

Body = bytes | Callable[[], AsyncIterator[bytes]] | None


@attrs.frozen
class Answer:
    """What a client handed back: the final status, its JSON (if any), redirects followed."""

    status: int
    json: Any
    redirects: int


class Send(Protocol):
    def __call__(
        self,
        method: str,
        url: URL,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
    ) -> Coroutine[Any, Any, Answer]: ...


@pytest.fixture(name="client_kind", params=["aiohttp", "httpx"])
def _client_kind(request: pytest.FixtureRequest) -> str:
    """Each client in turn."""
    kind: str = request.param
    return kind


@asynccontextmanager
async def connect(kind: str, tokens: TokenManager, *holders: TokenHolder) -> AsyncIterator[Send]:
    """A ``send`` through *kind*'s client, stamping *holders*' tokens, following redirects."""
    if kind == "aiohttp":
        async with tokens.session(*holders) as session:

            async def via_aiohttp(
                method: str,
                url: URL,
                body: Body = None,
                headers: Mapping[str, str] | None = None,
            ) -> Answer:
                data = body() if callable(body) else body
                async with session.request(method, url, data=data, headers=headers) as resp:
                    json = await resp.json() if resp.content_type == "application/json" else None
                    return Answer(resp.status, json, len(resp.history))

            yield via_aiohttp
    else:
        async with BearerAuth(*holders).client(follow_redirects=True) as client:

            async def via_httpx(
                method: str,
                url: URL,
                body: Body = None,
                headers: Mapping[str, str] | None = None,
            ) -> Answer:
                content = body() if callable(body) else body
                resp = await client.request(method, str(url), content=content, headers=headers)
                is_json = resp.headers.get("content-type", "").startswith("application/json")
                return Answer(resp.status_code, resp.json() if is_json else None, len(resp.history))

            yield via_httpx


def seen(api: Api, path: str | None = None) -> list[tuple[str, str | None]]:
    """(path, Authorization) of every request the server got, but token calls."""
    return [
        (r.path, r.authorization)
        for r in api.received
        if r.path != "/oauth/token" and (path is None or r.path == path)
    ]


def stream(*chunks: bytes) -> Callable[[], AsyncIterator[bytes]]:
    """A body that can be sent once only: an async generator."""

    async def gen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return gen


# --- both clients -----------------------------------------------------------


async def test_the_current_token_is_stamped_in_scope(client_kind: str) -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            first = await send("GET", api.api / "pay")  # a cold start: waits for the token
            token = holder.current
            assert token is not None
            holder.invalidate(token)
            second_token = await holder.get()
            second = await send("POST", api.api / "orders" / "7", b"amount=1")
    assert (200, 200) == (first.status, second.status)
    assert [
        ("/api/pay", token.header),
        ("/api/orders/7", second_token.header),
    ] == seen(api)
    assert 2 == api.token_calls


async def test_no_token_to_another_origin_or_outside_the_prefix(client_kind: str) -> None:
    async with serving(2) as (api, other), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            await holder.get()
            echoes = [
                await send("GET", api.base_url / "open" / "echo"),  # same origin, no /api
                await send("GET", other.api / "pay"),  # another port
                await send("GET", URL(f"http://localhost:{api.port}/open/echo")),  # other host
            ]
            near = await send("GET", api.base_url / "apix" / "echo")  # only looks like /api
    assert [200, 401, 200] == [a.status for a in echoes]
    assert {"authorization": None} == echoes[0].json == echoes[2].json
    assert 404 == near.status
    assert [("/open/echo", None), ("/open/echo", None)] == seen(api)
    assert [("/api/pay", None)] == seen(other)


@pytest.mark.parametrize(
    ("status", "where"),
    [
        (307, "same-origin-outside-the-api"),
        (302, "another-port"),
        (308, "another-host-name"),
        (307, "another-providers-api"),
    ],
)
async def test_a_redirect_hop_out_of_scope_carries_no_token(
    client_kind: str, status: int, where: str
) -> None:
    async with serving(2) as (api, other), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        # A second provider whose API is the first server's /open: the redirect
        # lands in scope of a provider, never the one the call was stamped for.
        neighbour = tokens.add(api.provider("neighbour", api=[api.base_url / "open"]))
        target = {
            "same-origin-outside-the-api": api.base_url / "open" / "echo",
            "another-port": other.base_url / "open" / "echo",
            "another-host-name": URL(f"http://localhost:{api.port}/open/echo"),
            "another-providers-api": api.base_url / "open" / "echo",
        }[where]
        holders = (holder, neighbour) if where == "another-providers-api" else (holder,)
        api.redirects["/api/redirect"] = (status, str(target))
        async with connect(client_kind, tokens, *holders) as send:
            answer = await send("GET", api.api / "redirect")
            token = holder.current
    assert token is not None
    assert (200, 1) == (answer.status, answer.redirects)
    assert {"authorization": None} == answer.json
    received = seen(api) + seen(other)
    assert [("/api/redirect", token.header), ("/open/echo", None)] == received


async def test_no_usable_token_waits_at_most_wait_timeout(client_kind: str) -> None:
    token_hold = asyncio.Event()  # the token endpoint does not answer
    policy = RefreshPolicy(wait_timeout=0.3)
    async with serving(token_hold=token_hold) as (api,), TokenManager(policy=policy) as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            started = time.monotonic()
            with pytest.raises(TokenUnavailableError):
                await send("POST", api.api / "pay", b"amount=1")
            waited = time.monotonic() - started
    assert 0.3 <= waited < 3.0
    assert [] == api.api_requests()  # nothing was sent without a token


async def test_a_redirect_within_the_api_keeps_the_token(client_kind: str) -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.redirects["/api/old"] = (308, "/api/new")
        async with connect(client_kind, tokens, holder) as send:
            answer = await send("POST", api.api / "old", b"amount=1")
            token = holder.current
    assert token is not None
    assert (200, 1) == (answer.status, answer.redirects)
    assert [("/api/old", token.header), ("/api/new", token.header)] == seen(api)
    assert [b"amount=1", b"amount=1"] == [r.body for r in api.api_requests()]


async def test_one_401_is_recovered_with_exactly_one_refresh(client_kind: str) -> None:
    # 20 requests refused with the same revoked token: one token call, each resent once.
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            old = await holder.get()
            api.revoke_all()
            answers = await asyncio.gather(
                *(send("POST", api.api / "pay", b"n=%d" % n) for n in range(20))
            )
            new = holder.current
    assert new is not None
    assert [200] * 20 == [a.status for a in answers]
    assert 2 == api.token_calls  # the first token, and exactly one refresh
    by_body: dict[bytes, list[str | None]] = {}
    for r in api.api_requests():
        by_body.setdefault(r.body, []).append(r.authorization)
    assert {b"n=%d" % n: [old.header, new.header] for n in range(20)} == by_body
    assert (1, 20, 0) == (
        holder.health().invalidations,
        holder.health().recoveries,
        holder.health().unreplayable,
    )


async def test_a_replayable_body_is_resent_identical(client_kind: str) -> None:
    body = b'{"amount": 1250, "currency": "EUR", "reference": "order-7"}'
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            old = await holder.get()
            api.revoke_all()
            answer = await send(
                "POST", api.api / "pay", body, headers={"Content-Type": "application/json"}
            )
            new = holder.current
    assert new is not None
    assert 200 == answer.status
    assert [(old.header, body), (new.header, body)] == [
        (r.authorization, r.body) for r in api.api_requests()
    ]
    assert 1 == holder.health().recoveries


async def test_an_unreplayable_body_gets_the_401_not_an_empty_resend(client_kind: str) -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            old = await holder.get()
            api.revoke_all()
            answer = await send("POST", api.api / "pay", stream(b"amount=", b"1250"))
            assert holder.current is not old  # invalidated all the same
            after = await send("POST", api.api / "pay", b"amount=1250")
            new = holder.current
    assert new is not None
    assert (401, 200) == (answer.status, after.status)
    assert [(old.header, b"amount=1250"), (new.header, b"amount=1250")] == [
        (r.authorization, r.body) for r in api.api_requests()
    ]
    assert (1, 0) == (holder.health().unreplayable, holder.health().recoveries)
    assert 2 == api.token_calls


async def test_a_second_401_is_handed_to_the_caller_then_the_holder_backs_off(
    client_kind: str,
) -> None:
    # A standing clock: the fresh token stays inside its backoff for the whole test.
    async with serving() as (api,), TokenManager(clock=ManualClock()) as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            await holder.get()
            api.refuse_all = True
            answer = await send("GET", api.api / "pay")
            fresh = holder.current
            assert fresh is not None
            assert holder.backing_off()
            # Within the backoff: handed back as it is, no resend, no new token.
            again = await send("POST", api.api / "pay", b"amount=1")
            assert holder.current is fresh
    assert (401, 401) == (answer.status, again.status)
    assert 3 == len(api.api_requests())  # the request, exactly one resend, the next request
    assert 2 == api.token_calls
    assert holder.refusing is not None
    assert (1, True) == (holder.refusing.tokens, holder.refusing.refused)
    assert (1, 0) == (holder.health().recoveries, holder.health().unreplayable)


@pytest.mark.parametrize("refuse_all", [True, False], ids=["refused-too", "revoked-once"])
async def test_a_late_401_is_resent_with_the_new_token_unless_the_api_refuses_that_too(
    client_kind: str, refuse_all: bool
) -> None:
    # Two requests carry one token; the later one is held at the server. The
    # first gets a 401, brings a new token (now in its first backoff: a
    # standing clock keeps it there) and is resent once. When the API
    # refuses every token, that resend gets a 401 too, and the late 401 for
    # the older token goes to its caller as it is: refreshing cannot help.
    # When only the one token was revoked, the late 401 is resent with the
    # new token.
    hold = asyncio.Event()

    def held(request: web.Request) -> bool:
        return request.query.get("n") == "late"

    async with (
        serving(hold=hold, hold_when=held) as (api,),
        TokenManager(clock=ManualClock()) as tokens,
    ):
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            await holder.get()
            late = asyncio.create_task(send("GET", (api.api / "pay").with_query(n="late")))
            await eventually(lambda: api.in_flight == 1)
            if refuse_all:
                api.refuse_all = True
            else:
                api.revoke_all()  # the one token the two requests carry
            answer = await send("GET", api.api / "pay")
            assert holder.backing_off()
            hold.set()
            late_answer = await late
    status = 401 if refuse_all else 200
    assert (status, status) == (answer.status, late_answer.status)
    # Each request and one resend, but the late one when the API refuses all.
    assert (3 if refuse_all else 4) == len(api.api_requests())
    assert 2 == api.token_calls
    assert (1 if refuse_all else 2) == holder.health().recoveries


async def test_the_callers_own_header_is_sent_untouched(client_kind: str) -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with connect(client_kind, tokens, holder) as send:
            token = await holder.get()
            mine = await send("GET", api.api / "pay", headers={"Authorization": "Bearer mine"})
            # Our own current token, set by hand on its API: the caller's too.
            by_hand = await send("GET", api.api / "pay", headers={"Authorization": token.header})
            # One of our tokens set by hand outside the API: stripped.
            leaked = await send(
                "GET", api.base_url / "open" / "echo", headers={"Authorization": token.header}
            )
    assert (401, 200) == (mine.status, by_hand.status)  # not recovered: not our token
    assert {"authorization": None} == leaked.json
    assert [
        ("/api/pay", "Bearer mine"),
        ("/api/pay", token.header),
        ("/open/echo", None),
    ] == seen(api)
    assert 0 == holder.health().invalidations


# --- httpx's own ------------------------------------------------------------


async def test_httpx_without_the_hook_sends_no_token_and_says_so() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        auth = BearerAuth(holder)
        api.redirects["/api/redirect"] = (307, "/open/echo")
        async with httpx.AsyncClient(auth=auth, follow_redirects=True) as client:
            with pytest.raises(ConfigError, match="needs its request hook"):
                await client.get(str(api.api / "redirect"))
    assert [("/api/redirect", None), ("/open/echo", None)] == seen(api)


async def test_httpx_hides_the_token_from_what_the_response_shows() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.redirects["/api/old"] = (307, "/api/new")
        api.redirects["/api/moved"] = (307, "/open/echo")
        auth = BearerAuth(holder)
        async with auth.client() as client:  # httpx's default: redirects not followed
            moved = await client.get(str(api.api / "moved"))
            assert moved.next_request is not None
            assert "authorization" not in moved.request.headers
            assert "authorization" not in moved.next_request.headers
            echo = await client.send(moved.next_request)  # decided again: outside the API
            followed = await client.get(str(api.api / "old"), follow_redirects=True)
            api.revoke_all()
            recovered = await client.get(str(api.api / "pay"))
            token = holder.current
    assert token is not None
    assert {"authorization": None} == echo.json()
    assert (200, 200) == (followed.status_code, recovered.status_code)
    shown = [followed.request, *(r.request for r in followed.history), recovered.request]
    shown += [r.request for r in recovered.history]
    assert [None] * 4 == [r.headers.get("authorization") for r in shown]
    assert ("/api/old", "/api/new") == (followed.history[0].url.path, followed.url.path)
    assert [401] == [r.status_code for r in recovered.history]
    assert ("/api/pay", token.header) == seen(api)[-1]


async def test_httpx_hides_the_token_from_a_call_that_failed_on_a_later_hop() -> None:
    # The second hop's answer makes a response hook raise: the exception
    # shows that hop's request, which must not carry our token.
    async def raise_on_error(response: httpx.Response) -> None:
        if response.status_code >= 400:
            await response.aread()
            response.raise_for_status()

    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        api.redirects["/api/old"] = (307, "/api/missing")
        api.refuse_when = lambda request: request.path == "/api/missing"
        auth = BearerAuth(holder)
        client = auth.client(follow_redirects=True, event_hooks={"response": [raise_on_error]})
        async with client:
            with pytest.raises(httpx.HTTPStatusError) as failed:
                await client.get(str(api.api / "old"))
    assert "/api/missing" == failed.value.request.url.path
    path, sent = seen(api)[-1]
    assert ("/api/missing", True) == (path, sent is not None and sent.startswith("Bearer "))
    shown = [failed.value.request, failed.value.response.request]
    assert [None, None] == [r.headers.get("authorization") for r in shown]


async def test_httpx_hook_strips_our_token_from_other_calls() -> None:
    # A request sent with another auth on the same client: the hook still
    # keeps our tokens off URLs they do not belong to.
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        token = await holder.get()
        auth = BearerAuth(holder)
        async with auth.client() as client:
            leak = await client.get(
                str(api.base_url / "open" / "echo"),
                auth=None,
                headers={"Authorization": token.header},
            )
            own = await client.get(
                str(api.api / "pay"), auth=None, headers={"Authorization": token.header}
            )
    assert {"authorization": None} == leak.json()
    assert 200 == own.status_code
    assert [("/open/echo", None), ("/api/pay", token.header)] == seen(api)


def test_httpx_is_async_only() -> None:
    # The flow refuses before anything is sent: no server needed.
    holder = TokenHolder(
        generic.provider(
            name="x",
            token_url="https://auth.example/token",
            api="https://pay.example/api",
            client_id="id",
            client_secret="secret",
        )
    )
    with (
        httpx.Client(auth=BearerAuth(holder)) as client,
        pytest.raises(TypeError, match=r"async only: use it with httpx\.AsyncClient"),
    ):
        client.get("https://pay.example/api/pay")


async def test_httpx_bearer_auth_refuses_what_cannot_work() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        merchants = tokens.add_tenants("m", api=api.api)
        with pytest.raises(ConfigError, match="holders must be a TokenHolder"):
            BearerAuth(holder, merchants)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="at least one"):
            BearerAuth()
        with pytest.raises(ConfigError, match="both claim"):
            BearerAuth(holder, holder)
        auth = BearerAuth(holder)
        with pytest.raises(ConfigError, match="sets auth itself"):
            auth.client(auth=None)
        assert (holder,) == auth.holders
        assert holder is auth.holder_for(str(api.api / "x"))
        assert auth.holder_for(api.base_url.human_repr() + "/apix") is None


def test_replayable_is_an_allow_list() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"  # pragma: no cover - never iterated

    def build(**kwargs: Any) -> httpx.Request:
        return httpx.Request("POST", "https://pay.example/api", **kwargs)

    assert replayable(build())
    assert replayable(build(content=b"a=1"))
    assert replayable(build(json={"a": 1}))
    assert replayable(build(data={"a": "1"}))
    assert not replayable(build(content=chunks()))
    assert not replayable(build(files={"f": b"x"}))


def test_the_core_imports_without_httpx() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import aiopay_auth, aiopay_auth.providers, aiopay_auth.testing\n"
        "assert 'httpx' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    import aiopay_auth.httpx\n"
        "except ImportError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert (0, "refused\n") == (done.returncode, done.stdout), done.stderr


async def test_httpx_one_hook_serves_a_per_request_auth() -> None:
    async with serving(2) as (api, other), TokenManager() as tokens:
        first = tokens.add(api.provider())
        second = tokens.add(other.provider("second"))
        other.redirects["/api/redirect"] = (307, str(api.api / "pay"))
        async with BearerAuth(first).client(follow_redirects=True) as client:
            per_request = BearerAuth(second)
            paid = await client.get(str(other.api / "pay"), auth=per_request)
            # Redirected from the second API to the first: neither token goes.
            moved = await client.get(str(other.api / "redirect"), auth=per_request)
            token = second.current
    assert token is not None
    assert (200, 401) == (paid.status_code, moved.status_code)
    assert [("/api/pay", token.header), ("/api/redirect", token.header)] == seen(other)
    assert [("/api/pay", None)] == seen(api)
    assert 0 == first.health().invalidations + second.health().invalidations


async def test_httpx_strips_only_our_field_of_several() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        token = await holder.get()
        async with BearerAuth(holder).client() as client:
            echo = await client.get(
                str(api.base_url / "open" / "echo"),
                headers=[("Authorization", token.header), ("Authorization", "Basic abc")],
            )
    assert {"authorization": "Basic abc"} == echo.json()


async def test_httpx_a_tenants_holder_per_request() -> None:
    async with serving(2) as (api, other), TokenManager() as tokens:
        merchants = tokens.add_tenants("m", api=api.api)
        m1 = merchants.add("m1", api.provider("m1"))
        base = tokens.add(other.provider())
        async with BearerAuth(base).client() as client:
            paid = await client.get(str(api.api / "pay"), auth=BearerAuth(m1.holder))
            token = m1.holder.current
    assert token is not None
    assert 200 == paid.status_code
    assert [("/api/pay", token.header)] == seen(api)
