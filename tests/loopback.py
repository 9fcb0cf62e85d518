"""A tiny independent HTTP server on 127.0.0.1 for tests of hostile providers.

Written from RFC 6749 and the vendors' documents, not from
``aiopay_auth.testing.FakeProvider``: each test gives it one handler and
reads back every request it received.
"""

from __future__ import annotations

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
