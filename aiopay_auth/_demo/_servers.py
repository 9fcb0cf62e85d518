"""The demo's fake servers, one per dialect: in a child process or in the demo's own loop."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from ..testing import FakeEndpoint, FakeProvider, FakeProviderProcess, ServerCounters
from ._config import ServerMode
from ._lanes import DIALECTS, Lane, plan_lanes


__all__ = ["FakeServers", "fake_servers"]


@attrs.frozen
class FakeServers:
    """The started servers, as the demo sees them.

    Attributes:
        lanes: What the workers send, planned from the servers' endpoints.
        counters: Reads every server's counters, by server name.
    """

    lanes: tuple[Lane, ...]
    counters: Callable[[], Awaitable[dict[str, ServerCounters]]]


@contextlib.asynccontextmanager
async def fake_servers(mode: ServerMode, lifetime: float) -> AsyncIterator[FakeServers]:
    """Start a fake server per dialect of :data:`~._lanes.DIALECTS`, tokens living *lifetime* s.

    ``"child"`` runs them in a child process (:class:`FakeProviderProcess`),
    so that on a multi-core machine the client and the servers do not share
    a core; ``"inline"`` in this event loop.
    """
    if mode == "child":
        servers: dict[str, Callable[[], FakeProvider]] = {
            d: functools.partial(FakeProvider, d, lifetime=lifetime) for d in DIALECTS
        }
        async with FakeProviderProcess(servers, name="aiopay-auth demo servers") as child:
            yield FakeServers(plan_lanes(child.endpoints.values()), child.counters_async)
        return
    async with contextlib.AsyncExitStack() as stack:
        fakes = [
            await stack.enter_async_context(FakeProvider(dialect, lifetime=lifetime))
            for dialect in DIALECTS
        ]

        async def counters() -> dict[str, ServerCounters]:
            return {fake.dialect: ServerCounters.of(fake) for fake in fakes}

        yield FakeServers(plan_lanes(FakeEndpoint.of(fake) for fake in fakes), counters)
