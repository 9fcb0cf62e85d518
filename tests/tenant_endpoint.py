"""An independent OAuth 2.0 server with many clients, and an API that knows whose token it got.

Written from RFC 6749 (§4.4 client credentials, §2.3.1 HTTP Basic client
authentication with form-encoded id and secret, §5.1/§5.2 answers) and
RFC 6750 (§3: a 401 carries ``WWW-Authenticate: Bearer``), not from
:class:`aiopay_auth.testing.FakeProvider`. Each client may have several
secrets (a rotation's grace period). The token endpoint counts requests in
flight (the most at once is kept) and records when each arrived; the API
under ``/api`` answers 200 with the client whose token it got, and 403 when
the path names another merchant (``/api/merchants/<id>/...``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote_plus

import attrs
from aiohttp import web
from yarl import URL

from aiopay_auth import Provider
from aiopay_auth.providers import generic


__all__ = ["ApiCall", "TenantApi", "TokenCall", "tenant_api"]


@attrs.frozen
class TokenCall:
    """One token request: who asked, with which secret, when it arrived."""

    client_id: str
    secret: str
    arrived: float
    accepted: bool


@attrs.frozen
class ApiCall:
    """One API request: its path, its Authorization field, the client its token was issued to."""

    path: str
    authorization: str | None
    client: str | None


class TenantApi:
    """A token endpoint at ``/oauth/token`` and an API under ``/api``, on 127.0.0.1.

    Args:
        lifetime: ``expires_in`` of the tokens it issues.
        token_delay: Seconds each token request is held before its answer.
    """

    def __init__(self, *, lifetime: float = 3600.0, token_delay: float = 0.0) -> None:
        self.lifetime = lifetime
        self.token_delay = token_delay
        self.clients: dict[str, set[str]] = {}
        self.token_calls: list[TokenCall] = []
        self.api_calls: list[ApiCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttle = 0  # the next token requests to answer 429, with Retry-After
        self.retry_after = "1"
        self._valid: dict[str, tuple[str, float]] = {}  # token -> (client, expires at)
        self.issued_with: dict[str, str] = {}  # token -> the secret that asked for it
        # Awaited once before the next token answer, then cleared (a test's hook).
        self.before_answer: Callable[[], Awaitable[object]] | None = None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = URL()

    @property
    def api(self) -> URL:
        """The API's base URL."""
        return self.base_url / "api"

    def client(self, client_id: str | None = None) -> tuple[str, str]:
        """Register a client (or one more secret for *client_id*); return its id and secret."""
        client_id = client_id or f"merchant-{len(self.clients) + 1}"
        secret = secrets.token_urlsafe(18)
        self.clients.setdefault(client_id, set()).add(secret)
        return client_id, secret

    def provider(self, client_id: str, secret: str, name: str = "acme") -> Provider:
        """The generic RFC 6749 profile of one client aimed at this server."""
        return generic.provider(
            name=name,
            token_url=self.base_url / "oauth" / "token",
            api=self.api,
            client_id=client_id,
            client_secret=secret,
        )

    def calls_by(self, client_id: str) -> list[TokenCall]:
        """The token requests *client_id* made."""
        return [c for c in self.token_calls if c.client_id == client_id]

    def revoke(self, client_id: str) -> None:
        """Refuse every token issued to *client_id* so far."""
        self._valid = {t: v for t, v in self._valid.items() if v[0] != client_id}

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_route("*", "/api", self._api)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        app.router.add_route("*", "/open/{tail:.*}", self._open)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = URL(f"http://127.0.0.1:{port}")

    async def close(self) -> None:
        """Stop listening; token requests still held are let go first."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.token_delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.token_delay)
            return await self._answer(request, arrived)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, arrived: float) -> web.Response:
        if self.before_answer is not None:
            hook, self.before_answer = self.before_answer, None
            await hook()
        if self.throttle:  # RFC 6585 §4: 429 Too Many Requests, Retry-After
            self.throttle -= 1
            self.token_calls.append(TokenCall("", "", arrived, accepted=False))
            headers = {"Retry-After": self.retry_after}
            return web.json_response({"error": "slow_down"}, status=429, headers=headers)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        raw_id, _, raw_secret = decoded.partition(":")
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        accepted = scheme.lower() == "basic" and secret in self.clients.get(client_id, ())
        self.token_calls.append(TokenCall(client_id, secret, arrived, accepted))
        if not accepted:
            challenge = {"WWW-Authenticate": 'Basic realm="token"'}
            return web.json_response({"error": "invalid_client"}, status=401, headers=challenge)
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"{client_id}.{secrets.token_urlsafe(16)}"
        self._valid[token] = (client_id, time.monotonic() + self.lifetime)
        self.issued_with[token] = secret
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def _api(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        scheme, _, token = (authorization or "").partition(" ")
        entry = self._valid.get(token) if scheme.lower() == "bearer" else None
        client = entry[0] if entry is not None and entry[1] > time.monotonic() else None
        self.api_calls.append(ApiCall(request.path, authorization, client))
        if "to" in request.query:
            return web.Response(status=302, headers={"Location": request.query["to"]})
        if client is None:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return web.json_response({"error": "invalid_token"}, status=401, headers=challenge)
        parts = request.path.split("/")
        if len(parts) > 3 and parts[2] == "merchants" and parts[3] != client:
            return web.json_response({"error": "insufficient_scope"}, status=403)
        return web.json_response({"client": client})

    async def _open(self, request: web.Request) -> web.Response:
        return web.json_response({"authorization": request.headers.get("Authorization")})


@contextlib.asynccontextmanager
async def tenant_api(**options: float) -> AsyncIterator[TenantApi]:
    """Start a :class:`TenantApi`; close it after."""
    server = TenantApi(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
