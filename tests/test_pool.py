"""FairGate and FairPool: first come, first served, per host and per pool; no place lost."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aiopay_auth import ConfigError, FairPool, TokenManager
from aiopay_auth._gate import FairGate
from aiopay_auth._pool import PoolGates, gates_for

from .helpers import eventually
from .hostile import Api, serving
from .loopback import serve


pytestmark = pytest.mark.anyio


async def enter(gate: FairGate) -> None:
    """Take a free place of *gate*: at once, or the test fails (it never hangs)."""
    await asyncio.wait_for(gate.acquire(), 1)


async def test_free_places_are_taken_at_once_and_counted() -> None:
    gate = FairGate(2)
    assert (2, 0, 0) == (gate.size, gate.inside, gate.waiting)
    assert gate.try_acquire()
    await asyncio.wait_for(gate.acquire(), 1)  # the second place, without waiting
    assert (2, 0) == (gate.inside, gate.waiting)
    assert not gate.try_acquire()  # full: refused, never queued
    assert (2, 0) == (gate.inside, gate.waiting)
    gate.release()
    assert 1 == gate.inside


async def test_places_are_handed_out_in_arrival_order() -> None:
    gate = FairGate(2)
    order: list[int] = []
    await enter(gate)
    await enter(gate)

    async def waiter(n: int) -> None:
        await gate.acquire()
        order.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(5)]
    await asyncio.sleep(0)
    assert 5 == gate.waiting
    for _ in range(5):
        gate.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert [0, 1, 2, 3, 4] == order
    assert 2 == gate.inside


async def test_a_newcomer_cannot_overtake_the_queue() -> None:
    gate = FairGate(1)
    await enter(gate)
    first = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # handed to `first`, not kept free for a newcomer
    newcomer = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert first.done()
    assert not newcomer.done()
    gate.release()
    await newcomer
    assert 1 == gate.inside


async def test_cancelled_waiter_gives_up_its_place() -> None:
    gate = FairGate(1)
    await enter(gate)
    doomed = asyncio.create_task(gate.acquire())
    survivor = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    assert doomed.cancelled()
    gate.release()
    await asyncio.wait_for(survivor, 1)
    assert 1 == gate.inside
    assert 0 == gate.waiting


async def test_cancelled_after_handoff_passes_the_place_on() -> None:
    gate = FairGate(1)
    await enter(gate)
    doomed = asyncio.create_task(gate.acquire())
    survivor = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the place to `doomed`...
    doomed.cancel()  # ...which is cancelled before it runs
    await asyncio.sleep(0)
    await asyncio.wait_for(survivor, 1)
    assert doomed.cancelled()
    assert 1 == gate.inside


async def test_the_gate_counts_who_queued_and_for_how_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("aiopay_auth._gate.time.monotonic", lambda: now[0])
    untimed = FairGate(1)
    await enter(untimed)
    waiter = asyncio.create_task(untimed.acquire())
    await asyncio.sleep(0)
    untimed.release()
    await waiter
    assert (0, 0.0) == (untimed.queued, untimed.queue_time)  # counted only once timed

    gate = FairGate(1)
    gate.timed = True
    await enter(gate)  # a free place: not counted
    first = asyncio.create_task(gate.acquire())
    doomed = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert (2, 0.0) == (gate.queued, gate.queue_time)
    now[0] += 1.0  # two queued for 1 s
    assert 2.0 == gate.queue_time  # still queued: counted up to now
    doomed.cancel()
    await asyncio.sleep(0)
    now[0] += 0.5  # one queued for 0.5 s
    gate.release()
    await first
    now[0] += 10.0  # nobody queued
    assert (2, 2.5) == (gate.queued, gate.queue_time)


async def test_a_dropped_host_gate_keeps_its_counts_in_the_pool_gates() -> None:
    gates = PoolGates(0, 1)
    gates.time_queues()
    host = gates.host("a")
    assert host is not None
    await enter(host)
    waiter = asyncio.create_task(host.acquire())
    await asyncio.sleep(0)
    host.release()
    await waiter
    host.release()
    gates.drop_idle("a", host)
    assert 0 == gates.hosts
    assert 1 == gates.queued
    assert 0 < gates.queue_time == host.queue_time


def test_size_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        FairGate(0)


async def test_gates_mirror_both_connector_limits() -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50, limit_per_host=7)
    ) as session:
        assert session.connector is not None
        gates = gates_for(session.connector)
        assert gates is not None
        assert gates.pool is not None
        assert 50 == gates.pool.size
        host = gates.host(("127.0.0.1", 1))
        assert host is not None
        assert 7 == host.size
        assert host is gates.host(("127.0.0.1", 1))
        assert host is not gates.host(("127.0.0.1", 2))
        assert gates is gates_for(session.connector)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=3)
    ) as session:
        assert session.connector is not None
        gates = gates_for(session.connector)
        assert gates is not None
        assert gates.pool is None
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)
    ) as session:
        assert session.connector is not None
        assert gates_for(session.connector) is None


async def test_per_host_limit_gates_each_host_not_the_whole_pool() -> None:
    # 3 hosts x 2 requests with limit_per_host=2: all 6 are in flight at once.
    hold = asyncio.Event()
    async with (
        serving(3, hold=hold) as apis,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=2), middlewares=[FairPool()]
        ) as http,
    ):

        async def one(api: Api) -> int:
            async with http.get(api.api / "x") as resp:
                return resp.status

        tasks = [asyncio.create_task(one(api)) for api in apis for _ in range(2)]
        try:
            await eventually(lambda: sum(api.in_flight for api in apis) == 6, within=5)
        finally:
            hold.set()
        assert [401] * 6 == await asyncio.gather(*tasks)  # no token: the API says 401
    assert [2, 2, 2] == [api.max_in_flight for api in apis]


async def test_per_host_gate_is_fifo_and_bounded_and_the_pool_gate_still_holds() -> None:
    hold = asyncio.Event()
    async with (
        serving(3, hold=hold) as apis,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=4, limit_per_host=2), middlewares=[FairPool()]
        ) as http,
    ):
        connector = http.connector
        assert connector is not None

        async def one(api: Api, n: int) -> None:
            async with http.get(api.api / "x", params={"n": str(n)}) as resp:
                await resp.read()

        first, second, third = apis
        tasks = [asyncio.create_task(one(first, n)) for n in range(5)]
        tasks += [asyncio.create_task(one(second, 10 + n)) for n in range(3)]
        tasks.append(asyncio.create_task(one(third, 20)))
        # 2 at the first host, 2 at the second: the pool's 4 places are taken.
        await eventually(lambda: (first.in_flight, second.in_flight) == (2, 2), within=5)
        gates = gates_for(connector)
        assert gates is not None
        assert gates.pool is not None
        assert 4 == gates.pool.inside
        assert 0 == third.in_flight
        hold.set()
        await asyncio.gather(*tasks)
        assert 0 == gates.pool.inside
        assert 0 == gates.hosts  # idle host gates are dropped
    assert [2, 2, 1] == [api.max_in_flight for api in apis]
    assert ["0", "1", "2", "3", "4"] == first.arrivals  # first come, first served
    assert ["10", "11", "12"] == second.arrivals


async def test_cancelled_waiter_dropped_by_a_release_still_raises_cancelled() -> None:
    # A release that runs between the cancel and the waiter waking drops the
    # cancelled future from the queue; the waiter must still see only its
    # cancellation (a stray ValueError would swallow it).
    gate = FairGate(1)
    await enter(gate)
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    gate.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert 0 == gate.inside
    assert 0 == gate.waiting
    assert gate.try_acquire()
    assert not gate.try_acquire()


async def test_a_cancelled_request_gives_back_its_host_place_and_drops_an_idle_host_gate() -> None:
    hold = asyncio.Event()
    async with (
        serving(2, hold=hold) as (a, b),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, limit_per_host=1), middlewares=[FairPool()]
        ) as http,
    ):
        connector = http.connector
        assert connector is not None
        gates = gates_for(connector)
        assert gates is not None
        assert gates.pool is not None

        async def one(url: URL) -> int:
            async with http.get(url) as resp:
                return resp.status

        first = asyncio.create_task(one(a.api / "x"))
        await eventually(lambda: a.in_flight == 1)
        same_host = asyncio.create_task(one(a.api / "y"))  # queued at A's gate
        other_host = asyncio.create_task(one(b.api / "x"))  # past B's gate, queued at the pool's
        await eventually(lambda: gates.pool is not None and gates.pool.waiting == 1)
        assert 2 == gates.hosts
        same_host.cancel()
        other_host.cancel()
        await asyncio.gather(same_host, other_host, return_exceptions=True)
        assert 1 == gates.hosts  # B's gate, now idle, is gone
        assert (1, 0) == (gates.pool.inside, gates.pool.waiting)
        hold.set()
        assert 401 == await first
        assert 0 == gates.hosts
        assert 0 == gates.pool.inside
    assert 0 == b.in_flight + b.max_in_flight


async def test_a_failed_request_gives_its_places_back_and_an_unbounded_pool_is_not_gated() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1, limit_per_host=1), middlewares=[FairPool()]
    ) as http:
        assert http.connector is not None
        gates = gates_for(http.connector)
        assert gates is not None
        assert gates.pool is not None
        for _ in range(2):  # the second would wait forever if the first kept its place
            with pytest.raises(aiohttp.ClientConnectorError):
                await http.get(f"http://127.0.0.1:{port}/")
        assert (0, 0) == (gates.pool.inside, gates.hosts)
    async with (
        serving() as (api,),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0), middlewares=[FairPool()]
        ) as http,
        http.get(api.api / "x") as resp,
    ):
        assert 401 == resp.status


@asynccontextmanager
async def _streaming() -> AsyncIterator[tuple[URL, dict[str, asyncio.Event]]]:
    """A server whose answer to a path sends its headers and a first chunk, then waits.

    The rest of the body follows once the path's event (made on first use) is set.
    """
    finish: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first ")
        await finish[request.path].wait()
        await response.write(b"rest")
        await response.write_eof()
        return response

    async with serve(handler) as server:
        try:
            yield server.url, finish
        finally:  # before the server stops: it waits for its handlers
            for event in finish.values():
                event.set()


async def test_an_admission_lasts_until_the_response_is_released() -> None:
    # The answer's headers are in but its body is not: the request still holds
    # its places (pool and host) until its connection goes back, by reading
    # the body or by release(); then the next request is admitted.
    async with (
        _streaming() as (url, finish),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, limit_per_host=1), middlewares=[FairPool()]
        ) as http,
    ):
        assert http.connector is not None
        gates = gates_for(http.connector)
        assert gates is not None
        assert gates.pool is not None
        first = await http.get(url / "a")
        assert first.connection is not None  # the body is still coming
        assert (1, 0, 1) == (gates.pool.inside, gates.waiting, gates.hosts)
        second = asyncio.create_task(http.get(url / "b"))
        await eventually(lambda: gates.waiting == 1)
        finish["/a"].set()
        assert b"first rest" == await first.read()  # its places go to `second`
        response = await asyncio.wait_for(second, 5)
        assert response.connection is not None
        assert (1, 0, 1) == (gates.pool.inside, gates.waiting, gates.hosts)
        response.release()
        assert (0, 0, 0) == (gates.pool.inside, gates.waiting, gates.hosts)


async def test_a_request_cancelled_as_its_host_place_is_handed_over_drops_the_idle_gate() -> None:
    # No overall limit, one place per host. The place is handed to the queued
    # request just as it is cancelled: it gives the place back, and the host's
    # gate, now idle, is forgotten.
    async with (
        _streaming() as (url, finish),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=1), middlewares=[FairPool()]
        ) as http,
    ):
        assert http.connector is not None
        gates = gates_for(http.connector)
        assert gates is not None
        assert gates.pool is None
        first = await http.get(url / "a")
        second = asyncio.create_task(http.get(url / "b"))
        await eventually(lambda: gates.waiting == 1)
        first.release()  # hands the host's place to `second`...
        second.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await second
        assert (0, 0) == (gates.hosts, gates.waiting)
        finish["/c"].set()
        async with http.get(url / "c") as response:  # the place is free
            assert b"first rest" == await response.read()
        assert 0 == gates.hosts


async def test_fair_pool_runs_its_bearer_auth_on_an_unbounded_pool() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        token = await holder.get()
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                middlewares=[FairPool(tokens.middleware(holder))],
            ) as http,
            http.get(api.api / "pay") as resp,
        ):
            assert http.connector is not None
            assert gates_for(http.connector) is None
            assert 200 == resp.status
    assert [token.header] == [r.authorization for r in api.api_requests()]


def test_pool_misuse_errors_name_what_was_wrong() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: FairGate(0), "FairGate size must be at least 1, not 0"),
        (lambda: PoolGates(-1, 0), "limit must be at least 0, not -1"),
        (lambda: PoolGates(0, -1), "limit_per_host must be at least 0, not -1"),
        (lambda: FairPool("x"), "FairPool auth must be a BearerAuth or NoneType, not a str"),  # type: ignore[arg-type]
    ]
    for make, message in cases:
        with pytest.raises(ConfigError) as error:
            make()
        assert message == str(error.value)
