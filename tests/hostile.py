"""An independent OAuth 2.0 server and bearer-guarded API for hostile-API tests.

Written from RFC 6749 (§4.4 client credentials, §2.3.1 HTTP Basic client
authentication, §5.1 the token response) and RFC 6750 (§3 a 401 with
``WWW-Authenticate: Bearer error="invalid_token"``), not from
:class:`aiopay_auth.testing.FakeProvider`. It records every request it
receives (path, ``Authorization``, the whole body), counts requests in
flight, and plays what a hostile API does: refuse every token, revoke
tokens, redirect elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from aiohttp import web
from yarl import URL

from aiopay_auth import Provider
from aiopay_auth.providers import generic


__all__ = ["Api", "Received", "serving"]

CLIENT_ID = "hostile-client"
CLIENT_SECRET = "hostile-secret-0123456789"


@attrs.frozen
class Received:
    """One request the server received."""

    method: str
    path: str
    authorization: str | None
    body: bytes


class Api:
    """A token endpoint at ``/oauth/token`` and an API under ``/api``, on 127.0.0.1.

    A path in :attr:`redirects` answers with that redirect; every other
    ``/api/...`` path answers 200 (``{"ok": true, "bytes": n, "seq": i}``,
    *i* the request's arrival index) to a bearer token it issued that has
    not expired or been revoked, and 401 otherwise. ``/open/...`` is outside the API and
    echoes the request's headers.

    Args:
        lifetime: ``expires_in`` of the tokens it issues.
        hold: When set, API requests wait for this event before answering
            (those that *hold_when* picks, or all).
        hold_when: Which API requests *hold* applies to.
        token_hold: When set, the token endpoint waits for this event.
        early_401: Refuse a request with a bad token as soon as its headers
            are in, without reading its body (RFC 9110 lets a server answer
            before the request is complete); such requests are counted in
            :attr:`early_refusals`, not recorded.
    """

    def __init__(
        self,
        *,
        lifetime: float = 60.0,
        hold: asyncio.Event | None = None,
        hold_when: Callable[[web.Request], bool] | None = None,
        token_hold: asyncio.Event | None = None,
        early_401: bool = False,
    ) -> None:
        self.lifetime = lifetime
        self.hold = hold
        self.hold_when = hold_when
        self.token_hold = token_hold
        self.unauthorized = 0
        self.early_401 = early_401
        self.early_refusals = 0
        self.refuse_all = False
        self.refuse_when: Callable[[web.Request], bool] | None = None
        self.valid: dict[str, float] = {}  # token -> when it expires (monotonic)
        self.issued: list[str] = []
        self.token_times: list[float] = []
        self.received: list[Received] = []
        self.redirects: dict[str, tuple[int, str]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = URL()

    @property
    def token_calls(self) -> int:
        """Tokens issued."""
        return len(self.issued)

    @property
    def api(self) -> URL:
        """The API's base URL."""
        return self.base_url / "api"

    @property
    def port(self) -> int:
        """The port it listens on."""
        port = self.base_url.port
        assert port is not None
        return port

    def provider(self, name: str = "hostile", api: list[URL] | None = None) -> Provider:
        """The generic RFC 6749 profile aimed at this server (its API, or *api*)."""
        return generic.provider(
            name=name,
            token_url=self.base_url / "oauth" / "token",
            api=self.api if api is None else api,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )

    def revoke_all(self) -> None:
        """Refuse every token issued so far; new ones are accepted."""
        self.valid.clear()

    def api_requests(self) -> list[Received]:
        """The requests that reached the API (not the token endpoint)."""
        return [r for r in self.received if r.path.startswith("/api")]

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        app.router.add_route("*", "/open/{tail:.*}", self._open)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        self.base_url = URL(f"http://127.0.0.1:{port}")

    async def close(self) -> None:
        """Stop listening; requests still held are let go first."""
        for event in (self.hold, self.token_hold):
            if event is not None:
                event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        if self.token_hold is not None:
            await self.token_hold.wait()
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.headers.get("Authorization"), body)
        )
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(24)
        self.issued.append(token)
        self.token_times.append(time.monotonic())
        self.valid[token] = time.monotonic() + self.lifetime
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        seq = len(self.arrivals)
        self.arrivals.append(request.query.get("n", ""))
        try:
            authorization = request.headers.get("Authorization")
            if self.early_401 and self._refused(authorization):
                self.early_refusals += 1
                return self._refuse()
            body = await request.read()
            self.received.append(Received(request.method, request.path, authorization, body))
            if self.hold is not None and (self.hold_when is None or self.hold_when(request)):
                await self.hold.wait()
            if request.path in self.redirects:
                status, location = self.redirects[request.path]
                return web.Response(status=status, headers={"Location": location})
            if self._refused(authorization) or (self.refuse_when and self.refuse_when(request)):
                return self._refuse()
            return web.json_response({"ok": True, "bytes": len(body), "seq": seq})
        finally:
            self.in_flight -= 1

    def _refused(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        expires = self.valid.get(token) if scheme.lower() == "bearer" else None
        return self.refuse_all or expires is None or expires <= time.monotonic()

    def _refuse(self) -> web.Response:
        self.unauthorized += 1
        return web.json_response(
            {"error": "invalid_token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    async def _open(self, request: web.Request) -> web.Response:
        body = await request.read()
        fields = request.headers.getall("Authorization", ())
        authorization = ", ".join(fields) if fields else None  # every field, in order
        self.received.append(Received(request.method, request.path, authorization, body))
        return web.json_response({"authorization": authorization})


@contextlib.asynccontextmanager
async def serving(count: int = 1, **options: Any) -> AsyncIterator[list[Api]]:
    """Start *count* independent servers (each on its own port), close them after."""
    apis = [Api(**options) for _ in range(count)]
    try:
        for api in apis:
            await api.start()
        yield apis
    finally:
        for api in apis:
            await api.close()
