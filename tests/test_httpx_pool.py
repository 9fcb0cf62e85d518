"""httpx's fair pool: ``BearerAuth.client(limit=N)`` admits each hop before it is stamped.

The promises of aiohttp's ``FairPool`` (``test_pool.py``, and the saturated
run of ``test_concurrency.py``), held by the gate :meth:`BearerAuth.client
<aiopay_auth.httpx.BearerAuth.client>` puts in front of httpx's pool, against
the independent server of ``tests/hostile.py``: no request sent with an
expired token, first come first served, a place per hop held until its
response is closed and given back however the hop ends (cancelled, failed,
redirected), every transport of the client behind the gate.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from aiohttp import web

from aiopay_auth import (
    ConfigError,
    RefreshPolicy,
    TokenHolder,
    TokenManager,
    TokenUnavailableError,
)
from aiopay_auth.httpx import BearerAuth, FairGate, pool_gate
from aiopay_auth.providers import generic

from .forward_proxy import forward_proxy
from .helpers import eventually
from .hostile import Api, serving


pytestmark = pytest.mark.anyio


def gate_of(client: httpx.AsyncClient) -> FairGate:
    """The client's gate; there is one."""
    gate = pool_gate(client)
    assert gate is not None
    return gate


def held(request: web.Request) -> bool:
    """Hold the API requests whose ``n`` is ``held``."""
    return request.query.get("n") == "held"


@asynccontextmanager
async def one_held(
    api: Api, client: httpx.AsyncClient
) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A request (``n=held``) that has its place and is held at the server."""
    first = asyncio.create_task(client.get(str((api.api / "x").with_query(n="held"))))
    await eventually(lambda: api.in_flight == 1)
    yield first


@pytest.mark.slow
async def test_saturated_small_pool_sends_no_expired_token_and_is_fair() -> None:
    # 300 workers loop over a pool of 10 with 2-second tokens, refreshed with
    # 1 s left. Without the gate a stamped request waits in httpx's pool for
    # a whole turn of the queue, seconds here: most are refused as expired,
    # many 401s reach the callers, and some workers starve. (Measured over
    # 6 s: 503 of 1,135 refused, 135 401s to callers, the slowest worker at 1
    # request against a mean of 2.6.) With the gate a token has at least 1 s
    # left when it is stamped, and the request is sent at once. (1-s tokens
    # leave half a second: enough, but not for a pause of the whole process
    # on a shared machine.)
    workers, pool = 300, 10
    async with serving(lifetime=2.0) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        url = str(api.api / "pay")
        async with BearerAuth(holder).client(limit=pool, timeout=30) as client:
            gate = gate_of(client)
            # Warm up: the first request loads httpx's lazy imports, which
            # holds up the whole loop (and every token's life) for a while.
            assert 200 == (await client.get(url)).status_code
            refused_before = api.unauthorized
            counts = [0] * workers
            statuses: list[int] = []
            overtaken: list[int] = []
            stop = time.monotonic() + 4

            async def worker(n: int) -> None:
                while time.monotonic() < stop:
                    before = len(api.arrivals)
                    resp = await client.get(url)
                    statuses.append(resp.status_code)
                    if resp.status_code == 200:
                        overtaken.append(resp.json()["seq"] - before)
                    counts[n] += 1

            await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(workers))), 30)
            assert (0, 0) == (gate.inside, gate.waiting)
    # Fresh: the API refused nothing (a 401 recovered by a resend would still
    # end in a 200), so no request carried an expired token.
    assert 0 == api.unauthorized - refused_before
    assert 0 == holder.health().invalidations
    assert {200} == set(statuses)
    assert api.max_in_flight <= pool
    # First come, first served, by count and not by clock: a request reaches
    # the API after one request of each other worker, plus those that the
    # pool's other places, cycling while it is in transit, send ahead of it;
    # never after a second turn of the queue. (Measured: at most 299 + 28.
    # Starved in httpx's own pool, a request is overtaken by a thousand.)
    assert max(overtaken) < 2 * workers
    # So the workers take turns: nobody gets less than half the mean (nor
    # more than one turn behind the others).
    mean = statistics.mean(counts)
    assert min(counts) >= mean / 2, (min(counts), mean)
    assert max(counts) - min(counts) <= 2, (min(counts), max(counts))


async def test_places_are_handed_out_in_arrival_order() -> None:
    hold = asyncio.Event()
    async with serving(hold=hold, hold_when=held) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            async with one_held(api, client) as first:
                tasks = []
                for n in range(5):
                    url = str((api.api / "x").with_query(n=str(n)))
                    tasks.append(asyncio.create_task(client.get(url)))
                    await eventually(lambda n=n: gate.waiting == n + 1)  # type: ignore[misc]
                hold.set()
                assert 200 == (await first).status_code
                assert [200] * 5 == [r.status_code for r in await asyncio.gather(*tasks)]
            assert (0, 0) == (gate.inside, gate.waiting)
    assert ["held", "0", "1", "2", "3", "4"] == api.arrivals
    assert 1 == api.max_in_flight


async def test_a_hop_is_stamped_after_its_wait_not_before() -> None:
    # The token changes while a request waits for its place: it leaves with
    # the token current when it got the place. (Stamped before the wait, as
    # a plain httpx client does, it would carry the old one.)
    hold = asyncio.Event()
    async with serving(hold=hold, hold_when=held) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        old = await holder.get()
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            async with one_held(api, client) as first:
                second = asyncio.create_task(client.get(str(api.api / "pay")))
                await eventually(lambda: gate.waiting == 1)
                holder.invalidate(old)
                new = await holder.get()
                hold.set()
                await first
                assert 200 == (await second).status_code
    assert new is not old
    assert [old.header, new.header] == [r.authorization for r in api.api_requests()]


async def test_requests_of_no_call_queue_in_the_same_line() -> None:
    # A request sent with auth=None (no flow, no token of ours) also takes a
    # place: it uses the same connections.
    hold = asyncio.Event()
    async with serving(hold=hold, hold_when=held) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            async with one_held(api, client) as first:
                other = asyncio.create_task(client.get(str(api.base_url / "open" / "x"), auth=None))
                await eventually(lambda: gate.waiting == 1)
                hold.set()
                assert (200, 200) == ((await first).status_code, (await other).status_code)
            assert 0 == gate.inside


async def test_cancelled_calls_give_their_places_back() -> None:
    # 10 calls in flight (held at the server) and 100 queued for a place:
    # cancelling the queued ones leaves the 10 places taken and nobody
    # queued; cancelling those in flight frees every place.
    hold = asyncio.Event()
    async with serving(hold=hold) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        async with BearerAuth(holder).client(limit=10) as client:
            gate = gate_of(client)
            url = str(api.api / "pay")
            in_flight = [asyncio.create_task(client.get(url)) for _ in range(10)]
            await eventually(lambda: api.in_flight == 10)
            queued = [asyncio.create_task(client.get(url)) for _ in range(100)]
            await eventually(lambda: gate.waiting == 100)
            for task in queued:
                task.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            assert all(task.cancelled() for task in queued)
            assert (10, 0) == (gate.inside, gate.waiting)
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            assert all(task.cancelled() for task in in_flight)
            assert (0, 0) == (gate.inside, gate.waiting)
            hold.set()
            answers = await asyncio.wait_for(
                asyncio.gather(*(client.get(url) for _ in range(10))), 5
            )
            assert [200] * 10 == [r.status_code for r in answers]
            assert 0 == gate.inside


async def test_a_call_that_gets_no_token_gives_its_place_back() -> None:
    # The token endpoint does not answer: the call waits for its token inside
    # its admission, then fails (cancelled, or TokenUnavailableError after
    # wait_timeout), and the next in line gets the place.
    token_hold = asyncio.Event()
    policy = RefreshPolicy(wait_timeout=0.3)
    async with (
        serving(token_hold=token_hold) as (api,),
        TokenManager(policy=policy) as tokens,
    ):
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            url = str(api.api / "pay")
            for _ in range(2):  # the second would wait forever for a leaked place
                with pytest.raises(TokenUnavailableError):
                    await asyncio.wait_for(client.get(url), 5)
            assert (0, 0) == (gate.inside, gate.waiting)
            waiting = asyncio.create_task(client.get(url))  # has the place, waits for a token
            await eventually(lambda: gate.inside == 1)
            queued = asyncio.create_task(client.get(url))
            await eventually(lambda: gate.waiting == 1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await eventually(lambda: gate.waiting == 0)  # `queued` has the place now
            token_hold.set()
            assert 200 == (await asyncio.wait_for(queued, 5)).status_code
            assert (0, 0) == (gate.inside, gate.waiting)


async def test_a_failed_hop_gives_its_place_back() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            for _ in range(2):  # the second would wait forever if the first kept its place
                with pytest.raises(httpx.ConnectError):
                    await asyncio.wait_for(client.get(f"http://127.0.0.1:{port}/"), 5)
            assert (0, 0) == (gate.inside, gate.waiting)


async def test_a_place_taken_for_a_hop_that_is_never_sent_is_given_back() -> None:
    # A request hook added after the client's own raises: the hop was
    # admitted (and stamped) but never reaches the transport.
    async def refuse(request: httpx.Request) -> None:
        if request.url.path.endswith("/refused"):
            raise ValueError(request.url.path)

    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            client.event_hooks["request"].append(refuse)
            gate = gate_of(client)
            for _ in range(2):
                with pytest.raises(ValueError, match="refused"):
                    await asyncio.wait_for(client.get(str(api.api / "refused")), 5)
            assert 200 == (await asyncio.wait_for(client.get(str(api.api / "pay")), 5)).status_code
            assert (0, 0) == (gate.inside, gate.waiting)
    assert ["/api/pay"] == [r.path for r in api.api_requests()]


async def test_an_admission_lasts_until_the_response_is_closed() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            gate = gate_of(client)
            async with asyncio.timeout(5), client.stream("GET", str(api.api / "a")) as first:
                assert 200 == first.status_code  # the body is not read yet
                assert 1 == gate.inside
                second = asyncio.create_task(client.get(str(api.api / "b")))
                await eventually(lambda: gate.waiting == 1)
            # Closed unread: its place goes to `second`.
            assert 200 == (await asyncio.wait_for(second, 5)).status_code
            request = client.build_request("GET", str(api.api / "c"))
            response = await asyncio.wait_for(client.send(request, stream=True), 5)
            assert (1, 0) == (gate.inside, gate.waiting)
            await response.aread()
            assert (0, 0) == (gate.inside, gate.waiting)


async def test_a_redirect_chain_and_a_resend_on_a_pool_of_one_do_not_deadlock() -> None:
    # Each hop gives its place back (its answer read and closed) before the
    # next hop takes one: one call never holds two places.
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.redirects["/api/a"] = (307, "/api/b")
        api.redirects["/api/b"] = (308, "/api/c")
        api.redirects["/api/c"] = (302, "/api/d")
        async with BearerAuth(holder).client(limit=1, follow_redirects=True) as client:
            gate = gate_of(client)
            answer = await asyncio.wait_for(client.get(str(api.api / "a")), 5)
            assert (200, 3) == (answer.status_code, len(answer.history))
            async with asyncio.timeout(5), client.stream("GET", str(api.api / "a")) as streamed:
                assert (200, 1) == (streamed.status_code, gate.inside)  # the last hop's only
            token = holder.current
            assert token is not None
            api.revoke_all()  # a 401, then the resend with a new token
            answer = await asyncio.wait_for(client.get(str(api.api / "a")), 5)
            assert (200, 4) == (answer.status_code, len(answer.history))
            new = holder.current
            assert (0, 0) == (gate.inside, gate.waiting)
    assert new is not None
    hops = [(r.path, r.authorization) for r in api.api_requests()]
    chain = ["/api/a", "/api/b", "/api/c", "/api/d"]
    # Twice the chain, then the chain refused at its end and resent from the start.
    assert 16 == len(hops)
    assert [(p, token.header) for p in chain] + [(p, new.header) for p in chain] == hops[-8:]
    assert 1 == api.max_in_flight


@pytest.mark.parametrize("route", ["proxy", "mounts", "transport"])
async def test_every_transport_of_the_client_is_behind_the_gate(route: str) -> None:
    # A request sent through a proxy, a mounted transport or the caller's own
    # transport holds its place until its response is closed, like any.
    hold = asyncio.Event()
    async with (
        serving(hold=hold, hold_when=held) as (api,),
        TokenManager() as tokens,
        forward_proxy() as proxy,
    ):
        holder = tokens.add(api.provider())
        await holder.get()
        auth = BearerAuth(holder)
        if route == "proxy":
            client = auth.client(limit=1, proxy=str(proxy.url))
        elif route == "mounts":
            mounted = httpx.AsyncHTTPTransport(proxy=str(proxy.url))
            client = auth.client(limit=1, mounts={f"http://127.0.0.1:{api.port}": mounted})
        else:
            client = auth.client(limit=1, transport=httpx.AsyncHTTPTransport(proxy=str(proxy.url)))
        async with client:
            gate = gate_of(client)
            async with one_held(api, client) as first:
                second = asyncio.create_task(client.get(str(api.api / "pay")))
                await eventually(lambda: gate.waiting == 1)
                assert 1 == gate.inside
                hold.set()
                assert (200, 200) == ((await first).status_code, (await second).status_code)
            assert (0, 0) == (gate.inside, gate.waiting)
    assert 2 == len(proxy.forwarded)  # they did go through the proxy
    assert 1 == api.max_in_flight


async def test_each_place_has_a_connection_of_its_own() -> None:
    # httpx's own transport behind the gate: a pool of one connection per
    # place instead of httpx's shared pool. Three hops in flight at once on
    # three places take three connections; later hops, one at a time or more
    # than the places at once, reuse them and open no other.
    peers: list[int] = []
    hold = asyncio.Event()

    def record(request: web.Request) -> bool:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        return held(request)

    async with serving(hold=hold, hold_when=record) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        async with BearerAuth(holder).client(limit=3) as client:
            url = api.api / "x"
            first = [
                asyncio.create_task(client.get(str(url.with_query(n="held")))) for _ in range(3)
            ]
            await eventually(lambda: api.in_flight == 3)
            hold.set()
            later = [await client.get(str(url)) for _ in range(4)]
            later += await asyncio.gather(*(client.get(str(url)) for _ in range(9)))
            assert {200} == {r.status_code for r in [*await asyncio.gather(*first), *later]}
            assert (0, 0) == (gate_of(client).inside, gate_of(client).waiting)
    assert 16 == len(peers)
    assert 3 == len(set(peers[:3]))
    assert set(peers) == set(peers[:3])


async def test_a_place_connects_to_another_origin_when_its_last_is_elsewhere() -> None:
    # One place, two servers in turn: the one pool closes its idle connection
    # to the other origin and opens one to this one; the token stays on its API.
    async with serving(2) as (api, other), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            statuses = [
                (await client.get(str(server.api / "x"))).status_code
                for server in (api, other, api, other, api)
            ]
            assert (0, 0) == (gate_of(client).inside, gate_of(client).waiting)
    assert [200, 401, 200, 401, 200] == statuses  # the other server wants a token of its own
    assert 3 == len(api.api_requests())
    assert {None} == {r.authorization for r in other.api_requests()}


async def test_a_response_read_by_its_transport_gives_its_place_back() -> None:
    # httpx.MockTransport answers with responses read already, whose bodies
    # httpx never closes: their places are given back at once.
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1, transport=httpx.MockTransport(answer)) as c:
            for _ in range(3):
                response = await asyncio.wait_for(c.get(str(api.api / "x")), 5)
                assert {"ok": True} == response.json()
            assert (0, 0) == (gate_of(c).inside, gate_of(c).waiting)


async def test_own_transport_or_fewer_kept_alive_keep_httpx_pool() -> None:
    # Only the transport httpx builds, with as many connections kept alive
    # as places, gets a connection per place (HTTP/2, not installed here,
    # keeps httpx's pool too: its connections are shared).
    async with serving() as (api,), TokenManager() as tokens:
        auth = BearerAuth(tokens.add(api.provider()))
        fewer = httpx.Limits(max_connections=4, max_keepalive_connections=2)
        for options in (
            {"limit": 4, "transport": httpx.AsyncHTTPTransport()},
            {"limits": fewer},
        ):
            async with auth.client(**options) as client:
                inner = client._transport._transport  # type: ignore[attr-defined]
                assert type(inner) is httpx.AsyncHTTPTransport
                assert 200 == (await client.get(str(api.api / "x"))).status_code


async def test_the_gate_has_the_pools_size() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        auth = BearerAuth(tokens.add(api.provider()))
        async with auth.client() as default, auth.client(limit=3) as three:
            assert (100, 3) == (gate_of(default).size, gate_of(three).size)
        async with auth.client(limits=httpx.Limits(max_connections=7)) as seven:
            assert 7 == gate_of(seven).size
        async with auth.client(limits=httpx.Limits(max_connections=None)) as unbounded:
            assert pool_gate(unbounded) is None  # no pool queue to be fair about
            assert 200 == (await unbounded.get(str(api.api / "pay"))).status_code
        async with httpx.AsyncClient() as plain:
            assert pool_gate(plain) is None


def test_client_refuses_what_cannot_work() -> None:
    # The arguments are checked before anything is built: no server needed.
    auth = BearerAuth(
        TokenHolder(
            generic.provider(
                name="x",
                token_url="https://auth.example/token",
                api="https://pay.example/api",
                client_id="id",
                client_secret="secret",
            )
        )
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "BearerAuth.client() limit must be at least 1, not 0"),
        ({"limit": "10"}, "BearerAuth.client() limit must be an int, not a str"),
        (
            {"limit": 5, "limits": httpx.Limits()},
            "BearerAuth.client() takes limit= or limits=, not both",
        ),
        ({"limits": 10}, "BearerAuth.client() limits must be a Limits, not a int"),
        (
            {"transport": httpx.AsyncHTTPTransport()},
            "BearerAuth.client(transport=...) needs limit=",
        ),
        ({"mounts": {}}, "BearerAuth.client(mounts=...) needs limit="),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError) as error:
            auth.client(**kwargs)
        assert str(error.value).startswith(message)


class _Counted(asyncio.Protocol):
    """One connection of :func:`counting_server`: answers each request ``200 ok``, kept alive."""

    def __init__(self, open_now: list[int]) -> None:
        self._open = open_now
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open[0] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._open[0] -= 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            assert self._transport is not None
            loop = asyncio.get_running_loop()  # answered a moment later: requests overlap
            loop.call_later(
                0.05, self._transport.write, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            )


@asynccontextmanager
async def counting_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that counts its open connections."""
    open_now = [0]
    server = await asyncio.get_running_loop().create_server(
        lambda: _Counted(open_now), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/x", open_now
    finally:
        server.close()


async def test_idle_connections_are_closed_after_the_keepalive_expiry() -> None:
    # As httpx's own pool does: an idle connection past keepalive_expiry is
    # closed at the next request, also the idle ones of places not used.
    holder = TokenHolder(
        generic.provider(
            name="p",
            token_url="http://127.0.0.1:9/token",
            api="http://127.0.0.1:9/api",
            client_id="id",
            client_secret="secret",
        )
    )
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=0.3)
    client = BearerAuth(holder).client(limits=limits)
    async with counting_server() as (url, open_now), client:
        await asyncio.gather(*(client.get(url) for _ in range(4)))
        assert 4 == open_now[0]
        await asyncio.sleep(0.5)  # past the expiry
        assert 200 == (await client.get(url)).status_code
        await eventually(lambda: open_now[0] == 1, within=2)


async def test_a_wait_at_the_gate_ends_at_the_pool_timeout() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with BearerAuth(holder).client(limit=1) as client:
            async with client.stream("GET", str(api.api / "a")) as first:
                assert 200 == first.status_code  # holds the one place, unread
                started = time.monotonic()
                with (
                    anyio.fail_after(5),
                    pytest.raises(httpx.PoolTimeout, match="within the pool timeout"),
                ):
                    await client.get(str(api.api / "b"), timeout=httpx.Timeout(5, pool=0.3))
                assert 0.3 <= time.monotonic() - started < 3
                assert (1, 0) == (gate_of(client).inside, gate_of(client).waiting)
            assert 200 == (await client.get(str(api.api / "c"))).status_code
            assert (0, 0) == (gate_of(client).inside, gate_of(client).waiting)
