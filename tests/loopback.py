"""A tiny independent HTTP server on 127.0.0.1 for tests of hostile providers.

Written from RFC 6749 and the vendors' documents, not from
``aiopay_auth.testing.FakeProvider``: each test gives it one handler and
reads back every request it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
from aiohttp import web
from yarl import URL


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class Loopback:
    """A running server: its base URL and the requests it saw."""

    url: URL
    seen: list[Seen] = attrs.Factory(list)


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Loopback]:
    """Run *handler* for every request on a fresh 127.0.0.1 port."""
    box: list[Loopback] = []

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        box[0].seen.append(Seen(request.method, request.path, dict(request.headers), body))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    box.append(Loopback(URL.build(scheme="http", host=host, port=port)))
    try:
        yield box[0]
    finally:
        await runner.cleanup()


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handle: StreamHandler) -> AsyncIterator[int]:
    """Serve raw TCP on a fresh 127.0.0.1 port (yielded); on exit, cancel every connection."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
