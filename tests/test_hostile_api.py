"""The middleware against hostile APIs, served by tests/hostile.py (RFC 6749/6750)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from aiopay_auth import FairPool, RefreshPolicy, TokenManager

from .helpers import eventually
from .hostile import serving


pytestmark = pytest.mark.anyio

BODY = b"amount=1250&currency=EUR&order=pay-0001"


async def chunks(_: contextlib.ExitStack) -> AsyncIterator[bytes]:
    for start in range(0, len(BODY), 8):
        yield BODY[start : start + 8]


def pipe_reader(stack: contextlib.ExitStack) -> io.BufferedReader:
    """An unseekable stream holding BODY (the read end of a pipe)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, BODY)
    os.close(write_fd)
    return stack.enter_context(open(read_fd, "rb"))


# --- 1. a 401 resend must never lose the body --------------------------------


class GeneratedPayload(aiohttp.payload.Payload):
    """A custom payload writing BODY from a generator: never sets ``consumed``."""

    def __init__(self) -> None:
        super().__init__(None)

    async def write(self, writer: Any) -> None:
        async for chunk in chunks(contextlib.ExitStack()):
            await writer.write(chunk)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return BODY.decode(encoding, errors)


class UnsureStream(io.BytesIO):
    """A file object holding BODY that cannot say whether it is seekable."""

    def seekable(self) -> bool:
        raise OSError("seekable() is not supported here")


def unsure_stream(_: contextlib.ExitStack) -> io.BytesIO:
    return UnsureStream(BODY)


def custom_payload(_: contextlib.ExitStack) -> aiohttp.payload.Payload:
    return GeneratedPayload()


def streamer(_: contextlib.ExitStack) -> object:
    """aiohttp's public (deprecated) ``aiohttp.streamer`` writing BODY."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        @aiohttp.streamer
        async def write(writer: Any) -> None:
            async for chunk in chunks(contextlib.ExitStack()):
                await writer.write(chunk)

        return write()


@pytest.mark.parametrize(
    "make_body",
    [chunks, pipe_reader, unsure_stream, custom_payload, streamer],
    ids=[
        "async-generator",
        "unseekable-stream",
        "seekable-raises",
        "payload-subclass",
        "aiohttp-streamer",
    ],
)
async def test_a_body_that_cannot_be_replayed_gets_the_401_not_an_empty_resend(
    make_body: Callable[[contextlib.ExitStack], Any],
) -> None:
    with contextlib.ExitStack() as stack:
        await _check_unreplayable(make_body(stack))


async def _check_unreplayable(body: object) -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        refused = await holder.get()
        api.revoke_all()
        async with tokens.session(holder) as http:
            async with http.post(api.api / "pay", data=body) as resp:
                assert 401 == resp.status  # the caller knows the payment was not taken
            # The refused token was still invalidated: the next request has a fresh one.
            async with http.post(api.api / "pay", data=BODY) as resp:
                assert 200 == resp.status
            fresh = holder.current
        assert fresh is not None
        assert fresh is not refused
        assert 1 == holder.health().unreplayable
        assert 0 == holder.health().recoveries
        assert 1 == holder.health().unreplayable
    sent = api.api_requests()
    assert [BODY, BODY] == [r.body for r in sent]  # never resent empty
    assert [refused.header, fresh.header] == [r.authorization for r in sent]
    assert 2 == api.token_calls


async def test_each_unreplayable_401_is_counted() -> None:
    # Two unreplayable requests refused with the same token: both get their
    # 401, the token is invalidated once, and each is counted.
    hold = asyncio.Event()
    with contextlib.ExitStack() as stack:
        bodies = [pipe_reader(stack), pipe_reader(stack)]
        async with serving(hold=hold) as (api,), TokenManager() as tokens:
            holder = tokens.add(api.provider())
            refused = await holder.get()
            async with tokens.session(holder) as http:

                async def pay(body: object) -> int:
                    async with http.post(api.api / "pay", data=body) as resp:
                        return resp.status

                tasks = [asyncio.create_task(pay(body)) for body in bodies]
                await eventually(lambda: api.in_flight == 2)
                api.revoke_all()
                hold.set()
                assert [401, 401] == await asyncio.gather(*tasks)
            assert (2, 0, 1) == (
                holder.health().unreplayable,
                holder.health().recoveries,
                holder.health().invalidations,
            )
    assert [refused.header] * 2 == [r.authorization for r in api.api_requests()]


async def test_a_401_before_the_body_is_read_never_leads_to_a_truncated_resend() -> None:
    # The API refuses the token as soon as the headers are in, while the
    # body is still streaming: resending would send the rest of the
    # generator (or nothing) as if it were the whole payment.
    more = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield BODY[:8]
        await more.wait()
        yield BODY[8:]

    async with serving(early_401=True) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        refused = await holder.get()
        api.revoke_all()
        async with tokens.session(holder) as http:
            try:
                async with http.post(api.api / "pay", data=slow_body()) as resp:
                    assert 401 == resp.status
            finally:
                more.set()
            async with http.post(api.api / "pay", data=BODY) as resp:
                assert 200 == resp.status
            fresh = holder.current
        assert fresh is not None
        assert fresh is not refused
    assert 1 == api.early_refusals
    # The only request the API took is the whole body, with the new token.
    assert [(fresh.header, BODY)] == [(r.authorization, r.body) for r in api.api_requests()]


async def test_a_multipart_body_with_an_unseekable_part_is_never_resent() -> None:
    # The API refuses as soon as the headers are in; whether the pipe part
    # has started to be read by then is a race, so the body is never resent.
    tries = 20
    async with serving(early_401=True) as (api,):
        for _ in range(tries):
            async with TokenManager() as tokens:  # each try a fresh first 401
                holder = tokens.add(api.provider())
                await holder.get()
                api.revoke_all()
                async with tokens.session(holder) as http:
                    with contextlib.ExitStack() as stack:
                        data = aiohttp.FormData()
                        data.add_field("head", b"h" * 200_000, filename="head.bin")
                        data.add_field("pipe", pipe_reader(stack), filename="pipe.bin")
                        async with http.post(api.api / "pay", data=data) as resp:
                            assert 401 == resp.status
                assert (1, 0) == (holder.health().unreplayable, holder.health().recoveries)
    assert [] == api.api_requests()  # no body, whole or truncated, was ever accepted


async def test_expect_100_continue_refused_at_the_headers_gets_the_401() -> None:
    # RFC 9110 §10.1.1: the server may answer a final 401 instead of 100.
    bodies: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"100-continue" not in head.lower():
            bodies.append(head)
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = URL(f"http://127.0.0.1:{port}/api")
        forms: list[dict[str, Any]] = [{"expect100": True}, {"headers": {"Expect": "100-Continue"}}]
        for kwargs in forms:
            async with serving() as (api,), TokenManager() as tokens:
                holder = tokens.add(api.provider(api=[url]))
                refused = await holder.get()
                async with (
                    tokens.session(holder) as http,
                    http.post(url / "pay", data=BODY, **kwargs) as resp,
                ):
                    assert 401 == resp.status
                assert holder.current is not refused  # still invalidated
                assert (0, 1) == (holder.health().recoveries, holder.health().unreplayable)
    finally:
        server.close()
        await server.wait_closed()
    assert [] == bodies  # never resent without the expectation (and its body)


def form() -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("amount", "1250")
    data.add_field("currency", "EUR")
    return data


def multipart() -> aiohttp.FormData:
    data = form()
    data.add_field("receipt", b"\x00receipt-bytes\xff", filename="receipt.bin")
    return data


@pytest.mark.parametrize(
    "kwargs",
    [
        lambda _: {"data": BODY},
        lambda _: {"data": BODY.decode()},
        lambda _: {"json": {"amount": 1250, "currency": "EUR"}},
        lambda _: {"data": {"amount": "1250", "currency": "EUR"}},
        lambda _: {"data": form()},
        lambda _: {"data": multipart()},
        lambda _: {"data": io.BytesIO(BODY)},
        lambda path: {"data": path.open("rb")},
    ],
    ids=["bytes", "str", "json", "dict-form", "form-data", "multipart", "bytesio", "file"],
)
async def test_a_replayable_body_is_resent_identical_after_a_401(
    kwargs: Callable[[Path], dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "body.bin"
    path.write_bytes(BODY)
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        refused = await holder.get()
        api.revoke_all()
        async with tokens.session(holder) as http:
            async with http.post(api.api / "pay", **kwargs(path)) as resp:
                assert 200 == resp.status
                answer = await resp.json()
            fresh = holder.current
        assert fresh is not None
        assert 1 == holder.health().recoveries
        assert 0 == holder.health().unreplayable
    first, resend = api.api_requests()
    assert (first.authorization, resend.authorization) == (refused.header, fresh.header)
    assert first.body
    assert first.body == resend.body  # the server got the identical body twice
    assert len(resend.body) == answer["bytes"]


# --- 2. an API that refuses every token -------------------------------------


def most_token_calls(policy: RefreshPolicy, window: float) -> int:
    """The most token calls the documented backoff allows in *window* seconds.

    The first token, the one fetched after its 401, then one more per
    backoff that has ended; the n-th backoff lasts at least half of
    ``backoff_initial * backoff_multiplier ** (n - 1)`` (capped at
    ``backoff_max``), the equal-jitter minimum.
    """
    calls, elapsed, attempt = 2, 0.0, 1
    while True:
        step = policy.backoff_initial * policy.backoff_multiplier ** (attempt - 1)
        elapsed += 0.5 * min(step, policy.backoff_max)
        if elapsed > window:
            return calls
        calls += 1
        attempt += 1


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "aiopay_auth", {}).get("event") == name]


def refuse_admin(request: web.Request) -> bool:
    return request.path.endswith("/admin")


def refuse_every_other() -> Callable[[web.Request], bool]:
    answers = itertools.count()
    return lambda _: next(answers) % 2 == 0


@pytest.mark.parametrize(
    ("refuse_all", "refuse_when", "paths"),
    [
        (True, None, ["pay"]),
        (False, lambda: refuse_admin, ["admin", "pay"]),
        (False, refuse_every_other, ["pay"]),
    ],
    ids=["always-401", "401-on-one-path", "alternating-401-200"],
)
async def test_an_api_refusing_tokens_backs_off_whatever_it_accepts_meanwhile(
    caplog: pytest.LogCaptureFixture,
    refuse_all: bool,
    refuse_when: Callable[[], Callable[[web.Request], bool]] | None,
    paths: list[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    policy = RefreshPolicy()
    workers, seconds = 20, 3.0
    async with serving() as (api,), TokenManager(policy=policy) as tokens:
        api.refuse_all = refuse_all
        api.refuse_when = None if refuse_when is None else refuse_when()
        holder = tokens.add(api.provider())
        started = time.monotonic()
        async with tokens.session(holder, limit=workers) as http:
            statuses: dict[str, list[int]] = {path: [] for path in paths}
            stop = started + seconds

            async def worker(path: str) -> None:
                while time.monotonic() < stop:
                    async with http.get(api.api / path) as resp:
                        statuses[path].append(resp.status)

            await asyncio.gather(*(worker(paths[i % len(paths)]) for i in range(workers)))
            window = time.monotonic() - started
            calls = api.token_calls
            health = holder.health()
            # Every caller got the API's answer, none an exception.
            answered = [status for path in paths for status in statuses[path]]
            assert 401 in answered
            assert len(answered) > calls
            if "admin" in paths:
                assert {200} == set(statuses["pay"])  # the other path is not disturbed
            # A bounded, growing backoff: not one token call per 401.
            assert 3 <= calls <= most_token_calls(policy, window)
            assert health.refusal_streak >= 2
            assert calls - 1 <= health.refused_tokens <= calls
            warnings = [
                r
                for r in events(caplog, "aiopay_auth.api_refusing_tokens")
                if r.levelno == logging.WARNING
            ]
            assert 1 == len(warnings)  # once per streak
            shown = [r.getMessage() for r in caplog.records] + [repr(health), repr(holder.refusing)]
            assert not [t for t in api.issued for text in shown if t in text]  # no token shown
    assert all(r.levelno < logging.ERROR for r in caplog.records)


async def test_short_tokens_refused_in_their_backoff_keep_the_streak_going() -> None:
    # 2-second tokens (believed 1 s) reach their refresh point during the
    # backoff: refused meanwhile, they count as refused and the streak and
    # its backoff keep growing instead of restarting at every refresh.
    # Until three tokens were refused, not for a fixed time: a loaded machine
    # reaches fewer refresh points in a given second; the bound of 15 s only
    # keeps a broken streak from looping forever.
    policy = RefreshPolicy()
    workers = 20
    async with serving(lifetime=2) as (api,), TokenManager(policy=policy) as tokens:
        api.refuse_all = True
        holder = tokens.add(api.provider())
        started = time.monotonic()
        async with tokens.session(holder, limit=workers) as http:

            async def worker() -> None:
                while holder.health().refused_tokens < 3:
                    assert time.monotonic() - started < 15, holder.health()
                    async with http.get(api.api / "pay") as resp:
                        assert 401 == resp.status

            await asyncio.gather(*(worker() for _ in range(workers)))
            window = time.monotonic() - started
            health = holder.health()
        assert health.refused_tokens >= 3
        assert health.refusal_streak == health.refused_tokens  # never restarted
        assert health.invalidations <= most_token_calls(policy, window) - 1


async def test_a_refusal_streak_ends_at_a_normal_refresh_then_a_revocation_is_recovered_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    # 4-second tokens: believed 3 s, refreshed after about 1.4 s (half the life at most).
    async with serving(lifetime=4) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        api.refuse_all = True
        async with tokens.session(holder) as http:
            deadline = time.monotonic() + 3.0  # the first backoff is at most 0.5 s
            while holder.health().refusal_streak < 2:
                assert time.monotonic() < deadline
                async with http.get(api.api / "pay") as resp:
                    assert 401 == resp.status
            # The API accepts tokens again: answers alone do not end the streak.
            api.refuse_all = False
            serving_token = await holder.get()
            calls = api.token_calls
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
            assert calls == api.token_calls
            assert holder.health().refusal_streak >= 2
            # The token reaches its refresh point with no 401: the streak ends.
            # The token served may have had a 401 in its backoff: two refreshes.
            deadline = time.monotonic() + 2 * 3.0
            while holder.health().refusal_streak:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert holder.latest is not serving_token
            recovered = holder.health()
            assert (0, 0.0) == (recovered.refusal_streak, recovered.refusal_backoff)
            # A later single revocation is recovered at once.
            recoveries, calls = holder.health().recoveries, api.token_calls
            api.revoke_all()
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
            assert (recoveries + 1, calls + 1) == (holder.health().recoveries, api.token_calls)
    assert 1 == len(events(caplog, "aiopay_auth.api_accepting_tokens"))


# --- 3. a redirect from one provider's API to another's ---------------------


async def test_a_redirect_to_another_providers_api_carries_neither_token() -> None:
    async with serving(2) as (a, b), TokenManager() as tokens:
        pay_a = tokens.add(a.provider("a"))
        pay_b = tokens.add(b.provider("b"))
        token_a, token_b = await pay_a.get(), await pay_b.get()
        a.redirects["/api/redirect/307"] = (307, str(b.api / "pay"))
        a.redirects["/api/redirect/303"] = (303, str(b.api / "pay"))
        a.redirects["/api/redirect/inside"] = (307, str(a.api / "pay"))
        async with tokens.session(pay_a, pay_b) as http:
            async with http.post(a.api / "redirect" / "307", data=BODY) as resp:
                assert [307] == [r.status for r in resp.history]
                assert 401 == resp.status  # B refuses a request that carries no token
            async with http.post(a.api / "redirect" / "303", data=BODY) as resp:
                assert [303] == [r.status for r in resp.history]
                assert 401 == resp.status
            # Within the stamped provider's API, the hop keeps its token.
            async with http.post(a.api / "redirect" / "inside", data=BODY) as resp:
                assert 200 == resp.status
            # The next call of the same task is a call of its own.
            async with http.get(b.api / "pay") as resp:
                assert 200 == resp.status
            # A call sent with the caller's own header: aiohttp drops it at
            # the other origin, and B's token does not take its place.
            own = {"Authorization": "Bearer the-callers-own"}
            async with http.post(a.api / "redirect" / "307", data=BODY, headers=own) as resp:
                assert [307] == [r.status for r in resp.history]
                assert 401 == resp.status
    at_a = [(r.authorization, r.body) for r in a.api_requests()]
    assert [(token_a.header, BODY)] * 4 + [("Bearer the-callers-own", BODY)] == at_a
    at_b = [(r.method, r.authorization, r.body) for r in b.api_requests()]
    assert [
        ("POST", None, BODY),
        ("GET", None, b""),
        ("GET", token_b.header, b""),
        ("POST", None, BODY),
    ] == at_b
    assert 0 == pay_a.health().invalidations + pay_b.health().invalidations


async def test_a_redirect_chain_is_bound_to_its_first_hop_whatever_runs_inside_it() -> None:
    async with serving(2) as (a, b), TokenManager() as tokens:
        pay_a = tokens.add(a.provider("a"))
        pay_b = tokens.add(b.provider("b"))
        token_a, token_b = await pay_a.get(), await pay_b.get()
        a.redirects["/api/redirect/away"] = (307, str(b.api / "redirect" / "back"))
        b.redirects["/api/redirect/back"] = (307, str(a.api / "pay"))
        side = tokens.session(pay_a, pay_b)

        async def inner(
            req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            # A request of its own, in the same task, in the middle of a hop.
            if req.url.path.endswith("/away"):
                async with side.get(b.api / "pay") as own:
                    assert 200 == own.status
            return await handler(req)

        auth = tokens.middleware(pay_a, pay_b)
        # A -> B -> A: the hop at B carries neither token, the hop back at
        # A carries A's, as the first hop did.
        async with (
            aiohttp.ClientSession(middlewares=[FairPool(), auth, inner]) as http,
            http.get(a.api / "redirect" / "away") as resp,
        ):
            assert [307, 307] == [r.status for r in resp.history]
            assert 200 == resp.status
        async with (
            tokens.session(pay_a, pay_b) as http,
            http.get(a.api / "redirect" / "away") as resp,
        ):
            assert [307, 307] == [r.status for r in resp.history]
            assert 200 == resp.status
        await side.close()
    at_a = [r.authorization for r in a.api_requests()]
    assert [token_a.header] * 4 == at_a
    at_b = [(r.path, r.authorization) for r in b.api_requests()]
    assert [
        ("/api/pay", token_b.header),
        ("/api/redirect/back", None),
        ("/api/redirect/back", None),
    ] == at_b


# --- 4. the caller's own Authorization --------------------------------------


@pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
async def test_an_explicit_authorization_is_sent_untouched_without_401_recovery() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        token = await holder.get()
        async with tokens.session(holder) as http:
            headers = {"Authorization": "Bearer the-callers-own"}
            async with http.post(api.api / "pay", data=BODY, headers=headers) as resp:
                assert 401 == resp.status
            basic = aiohttp.BasicAuth("user", "pass")
            async with http.post(api.api / "pay", data=BODY, auth=basic) as resp:
                assert 401 == resp.status
        assert holder.current is token  # not invalidated: it was never sent
        assert 0 == holder.health().invalidations
        assert 0 == holder.health().recoveries
    sent = [r.authorization for r in api.api_requests()]
    assert ["Bearer the-callers-own", basic.encode()] == sent  # once each, untouched
    assert 1 == api.token_calls


async def test_our_token_set_by_hand_is_stripped_out_of_scope_and_replaced_in_another_api() -> None:
    async with serving(2) as (a, b), TokenManager() as tokens:
        pay_a = tokens.add(a.provider("a"))
        pay_b = tokens.add(b.provider("b"))
        token_a, token_b = await pay_a.get(), await pay_b.get()
        async with tokens.session(pay_a, pay_b) as http:
            # Out of every API (same origin as A's API): our token is removed.
            by_hand = {"Authorization": token_a.header}
            async with http.get(a.base_url / "open" / "echo", headers=by_hand) as resp:
                assert {"authorization": None} == await resp.json()
            # B's token by hand on A's API: A's own token goes instead.
            by_hand = {"Authorization": token_b.header}
            async with http.get(a.api / "pay", headers=by_hand) as resp:
                assert 200 == resp.status
            # Another letter case of the scheme, whitespace (a tab too): still ours.
            for value in (
                f"bearer {token_a.access_token}",
                f" BEARER  {token_a.access_token} ",
                f"Bearer\t{token_a.access_token}",
            ):
                async with http.get(
                    a.base_url / "open" / "echo", headers={"Authorization": value}
                ) as resp:
                    assert {"authorization": None} == await resp.json()
            # Two fields, someone else's bearer first and ours second: ours goes.
            fields = CIMultiDict(
                [("Authorization", "Bearer someone-elses"), ("Authorization", token_a.header)]
            )
            async with http.get(a.base_url / "open" / "echo", headers=fields) as resp:
                assert {"authorization": "Bearer someone-elses"} == await resp.json()
            # A previous token of ours, still valid at the API: stripped too.
            pay_a.invalidate(token_a)
            assert await pay_a.get() is not token_a
            by_hand = {"Authorization": token_a.header}
            async with http.get(a.base_url / "open" / "echo", headers=by_hand) as resp:
                assert {"authorization": None} == await resp.json()
            # A user's own credential for another API is left alone, and so
            # is anything that is not "Bearer <one of our tokens>".
            for value in (
                "Basic b3duOmNyZWRz",
                "Bearer",
                f"Basic {token_a.access_token}",
                f"Bearer {token_a.access_token} extra",
            ):
                async with http.get(
                    a.base_url / "open" / "echo", headers={"Authorization": value}
                ) as resp:
                    assert {"authorization": value} == await resp.json()
            # A's previous token by hand on A's own API: the caller's header, untouched.
            by_hand = {"Authorization": token_a.header}
            async with http.get(a.api / "pay", headers=by_hand) as resp:
                assert 200 == resp.status
    assert [token_a.header] * 2 == [r.authorization for r in a.api_requests()]
    assert [] == b.api_requests()
    assert 2 == a.token_calls


async def test_a_token_refused_after_twice_backoff_max_current_starts_a_fresh_streak() -> None:
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.1)
    async with serving() as (api,), TokenManager(policy=policy) as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        api.refuse_all = True
        async with tokens.session(holder) as http:
            deadline = time.monotonic() + 3.0
            while holder.health().refusal_streak < 3:
                assert time.monotonic() < deadline
                async with http.get(api.api / "pay") as resp:
                    assert 401 == resp.status
            api.refuse_all = False
            serving_token = await holder.get()
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
            assert holder.health().refusal_streak >= 3  # answers do not end it
            # Current for more than 2 * backoff_max: its refusal is a new streak.
            await asyncio.sleep(2 * policy.backoff_max + 0.05)
            assert holder.current is serving_token
            recoveries, calls = holder.health().recoveries, api.token_calls
            api.revoke_all()
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status  # recovered at once
            assert (recoveries + 1, calls + 1) == (holder.health().recoveries, api.token_calls)
            assert 1 == holder.health().refusal_streak


# --- an API error raised by raise_for_status --------------------------------


async def test_raise_for_status_errors_do_not_show_the_bearer_token() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.refuse_when = refuse_admin
        async with tokens.session(holder, raise_for_status=True) as http:
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
                assert "Authorization" not in resp.request_info.headers
            with pytest.raises(aiohttp.ClientResponseError) as caught:
                async with http.get(api.api / "admin"):
                    pass
        err = caught.value
        assert 401 == err.status
        assert "Authorization" not in err.request_info.headers
        shown = repr(err) + str(err) + repr(err.request_info) + repr(err.history)
        assert not [t for t in api.issued if t in shown]
    # The token was sent all the same, on every request and the resend.
    assert all(r.authorization for r in api.api_requests())
    assert 3 == len(api.api_requests())
