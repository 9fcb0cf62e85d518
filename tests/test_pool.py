"""FairGate: first come, first served; no place lost to cancellation."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from aiopay_auth import ConfigError, FairGate
from aiopay_auth._pool import gate_for


pytestmark = pytest.mark.anyio


async def test_places_are_handed_out_in_arrival_order() -> None:
    gate = FairGate(2)
    order: list[int] = []
    await gate.acquire()
    await gate.acquire()

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
    await gate.acquire()
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
    await gate.acquire()
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
    await gate.acquire()
    doomed = asyncio.create_task(gate.acquire())
    survivor = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the place to `doomed`...
    doomed.cancel()  # ...which is cancelled before it runs
    await asyncio.sleep(0)
    await asyncio.wait_for(survivor, 1)
    assert doomed.cancelled()
    assert 1 == gate.inside


def test_size_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        FairGate(0)


async def test_gate_sized_from_the_tighter_connector_limit() -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50, limit_per_host=7)
    ) as session:
        assert session.connector is not None
        gate = gate_for(session.connector)
        assert gate is not None
        assert 7 == gate.size
        assert gate is gate_for(session.connector)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)
    ) as session:
        assert session.connector is not None
        assert gate_for(session.connector) is None


async def test_cancelled_waiter_dropped_by_a_release_still_raises_cancelled() -> None:
    # A release that runs between the cancel and the waiter waking drops the
    # cancelled future from the queue; the waiter must still see only its
    # cancellation (a stray ValueError would swallow it).
    gate = FairGate(1)
    await gate.acquire()
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
