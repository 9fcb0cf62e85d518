"""Independent token endpoints for tests, written from RFC 6749 §5.1/§5.2 (not FakeProvider).

A plain ``aiohttp.web`` app whose token handler each test sets, and a raw
asyncio TCP server that answers with whatever bytes a test gives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from aiopay_auth import Provider
from aiopay_auth.providers import generic


CLIENT_ID = "hostile-client"
CLIENT_SECRET = "hostile-client-secret-0123456789"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_provider(base: str, **overrides: object) -> Provider:
    kwargs: dict[str, object] = {
        "name": "hostile",
        "token_url": f"{base}/token",
        "api": f"{base}/api",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    kwargs.update(overrides)
    return generic.provider(**kwargs)  # type: ignore[arg-type]


def token_json(access_token: str, expires_in: object, **extra: object) -> web.Response:
    """An RFC 6749 §5.1 success: JSON, no-store, no-cache."""
    body = {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}
    body.update(extra)
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def oauth_error(status: int, error: str, description: str | None = None) -> web.Response:
    """An RFC 6749 §5.2 error answer."""
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


class WebEndpoint:
    """A plain aiohttp.web token endpoint on 127.0.0.1, and an API under ``/api``.

    The API answers every GET with ``api_status`` (a 401 carries RFC 6750's
    ``WWW-Authenticate: Bearer error="invalid_token"``).
    """

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.calls: list[float] = []  # time.monotonic() of each token request
        self.api_status = 200
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def _api(self, _: web.Request) -> web.Response:
        if self.api_status == 401:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return web.Response(status=401, headers=challenge)
        return web.Response(status=self.api_status)

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(time.monotonic())
        await request.read()
        assert self.handler is not None
        return await self.handler(request)

    async def start(self, app: web.Application | None = None) -> None:
        app = app or web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/api/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class RawEndpoint:
    """A raw TCP server: reads one request, writes ``answer`` bytes, then closes or aborts.

    Each ``@@@@`` in the answer becomes the connection's number (four
    digits, so lengths do not change): a way to hand out a new token each time.
    """

    def __init__(self) -> None:
        self.answer: bytes = b""
        self.abort = False
        self.connections = 0
        self.base = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(self.answer.replace(b"@@@@", b"%04d" % (self.connections % 10000)))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if self.abort:
                writer.transport.abort()
            else:
                writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
