"""A loopback OAuth2 provider that impersonates one payment provider's token endpoint.

:class:`FakeProvider` runs a real :mod:`aiohttp.web` server on ``127.0.0.1`` (an ephemeral
port) that serves a token endpoint speaking exactly one provider *dialect* (refusing what the
real provider refuses, with its error), a protected API under :attr:`FakeProvider.api_base`
(for ``"oro"`` a second one under :attr:`FakeProvider.storefront_api_base`) that accepts only
live bearer tokens this server issued, and two unprotected helpers (``/redirect``,
``/echo-headers``). Its counters and :attr:`FakeProvider.rejected` let tests assert what a
client did; :meth:`FakeProvider.queue` scripts misbehaving token answers (:class:`Scripted`).

This module is the HTTP app every dialect shares: lifecycle, URLs, routes, the protected API
and the counters. The tokens and clients live in ``_ledger.py`` (:class:`~._ledger.TokenLedger`,
also the desk the dialect asks), scripted and random faults in ``_scripts.py``, the helpers in
``_helpers.py``, and what differs between providers in ``_dialects/``, one module each.

Example::

    async with FakeProvider("cm") as provider:
        ...  # point a client at provider.token_url and provider.api_base
        assert provider.tokens_issued == 1
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Final

from aiohttp import hdrs, web
from yarl import URL

from ._dialects import DIALECTS, Dialect, DialectRules, Rejection
from ._dialects._wire import JSON, json_response
from ._helpers import echo_headers, redirect
from ._ledger import KIND_API, KIND_STOREFRONT, TokenLedger
from ._scripts import FaultScripts, Scripted, pause, play


__all__ = ["Dialect", "FakeProvider", "Scripted"]

_INVALID_TOKEN_BODY: Final = json.dumps({"error": "invalid_token"})
_INVALID_TOKEN_HEADERS: Final[Mapping[str, str]] = {
    "WWW-Authenticate": 'Bearer error="invalid_token"'
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeProvider(TokenLedger, FaultScripts):
    """A loopback OAuth2 token endpoint plus protected API speaking one provider dialect.

    The server binds ``127.0.0.1`` on an ephemeral port when started (:meth:`start` or
    ``async with``). Token requests are validated the way the real provider validates them;
    every refusal is answered with the provider's error format and its reason is appended to
    :attr:`rejected` (never including secrets).

    Attributes:
        dialect: The provider dialect spoken.
        lifetime: Seconds each newly issued access token lives (may be fractional). Mutable.
            The token response reports it exactly as ``expires_in`` (a JSON integer when it
            is whole, else the same float) and the API refuses the token from ``issue time +
            expires_in`` on :attr:`clock`: what the client is told is what is enforced.
        clock: The monotonic clock (seconds) that times issued tokens; ``time.monotonic``
            unless a test injects one to check expiry at an exact instant.
        token_delay: Seconds every unscripted token call waits before it is handled, to
            simulate a slow endpoint that still answers normally. Mutable; 0 by default.
        client_id: The accepted client id (for ``"oro"``: the back-office client).
        client_secret: The accepted client secret.
        username: The accepted resource-owner username (password grant).
        password: The accepted resource-owner password (password grant).
        storefront_client_id: ``"oro"`` only: the storefront client id (same secret).
        audience: ``"payme"`` only: the required ``audience`` field.
        issue_refresh_tokens: ``None`` for the dialect default (``"payme"``: when
            ``offline_access`` is in scope; ``"rfc6749"``: password grant; others: never),
            ``True``/``False`` to force.
        rotate_refresh_tokens: Whether a refresh token is single use (a refresh grant spends
            it and issues a new one). If ``False`` it stays valid and no new one is issued.
        token_calls: Requests that reached the token endpoint (accepted or not, scripted too).
        tokens_issued: Access tokens issued.
        api_calls: Requests that reached a protected API.
        api_unauthorized: Protected API requests answered 401.
        api_expired: Of those, how many carried a token this server issued that had expired.
        rejected: A human-readable reason for every refused token request.
        issued_tokens: Every access token ever issued (including revoked and expired ones).
        issued_refresh_tokens: Every refresh token ever issued (including spent ones).
        chaos_faults: Token calls answered with a fault by :meth:`fail_randomly`.
        last_api_authorization: The ``Authorization`` header of the latest protected API
            request (``None`` if it had none or there was none yet).
        token_calls_by_client: Token requests by the client id they named (accepted or
            not; scripted answers are not counted here): one count per merchant when a
            worker serves many (see :meth:`add_client`).
        api_calls_by_client: Protected API requests accepted, by the client whose token
            they carried.
        token_calls_in_flight: Token requests being handled now.
        max_token_calls_in_flight: The most token requests handled at once so far: a
            client's cap on concurrent token requests, seen from the server.
    """

    def __init__(
        self,
        dialect: Dialect = "rfc6749",
        *,
        lifetime: float = 3600.0,
        client_id: str = "test-client",
        client_secret: str = "s3cret+/:%&=",
        username: str = "merchant@example.com",
        password: str = "p@ss word:1",
        storefront_client_id: str = "test-storefront",
        issue_refresh_tokens: bool | None = None,
        rotate_refresh_tokens: bool = True,
        audience: str = "https://api.dev.alignet.io",
        clock: Callable[[], float] = time.monotonic,
        clients: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Configure the provider; nothing is bound until :meth:`start`.

        Args:
            dialect: Which provider to impersonate.
            lifetime: Seconds each issued access token lives (fractions allowed), reported
                exactly as ``expires_in`` and enforced from the moment of issue.
            client_id: The accepted client id (``"oro"``: the back-office client).
            client_secret: The accepted client secret (shared by both ``"oro"`` clients).
            username: The accepted username for the password grant.
            password: The accepted password for the password grant.
            storefront_client_id: ``"oro"`` only: the storefront client's id.
            issue_refresh_tokens: ``None`` for the dialect default, or force on/off.
            rotate_refresh_tokens: Whether refresh tokens are single use.
            audience: ``"payme"`` only: the ``audience`` the token request must name.
            clock: Monotonic clock timing token expiry (``time.monotonic`` by default).
            clients: More ``(client_id, client_secret)`` pairs to accept, as
                :meth:`add_client` adds them: one per merchant, chosen by the
                caller (e.g. for a fake started in a child process).

        Raises:
            ValueError: If ``dialect`` is unknown.
        """
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {sorted(DIALECTS)}")
        super().__init__()
        self.dialect: Dialect = dialect
        self._rules: DialectRules = DIALECTS[dialect]
        self.lifetime = lifetime
        self.token_delay = 0.0
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.storefront_client_id = storefront_client_id
        self.issue_refresh_tokens = issue_refresh_tokens
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.audience = audience
        self.clock = clock

        self.token_calls = 0
        self.tokens_issued = 0
        self.api_calls = 0
        self.api_unauthorized = 0
        self.api_expired = 0
        self.rejected: list[str] = []
        self.issued_tokens: set[str] = set()
        self.issued_refresh_tokens: set[str] = set()
        self.last_api_authorization: str | None = None
        self.token_calls_by_client: Counter[str] = Counter()
        self.api_calls_by_client: Counter[str] = Counter()
        self.token_calls_in_flight = 0
        self.max_token_calls_in_flight = 0

        self.chaos_faults = 0
        self._runner: web.AppRunner | None = None
        self._base_url: URL | None = None
        self._closing = asyncio.Event()
        self._closed = False
        for merchant, merchant_secret in clients:
            self.add_client(merchant, merchant_secret)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind ``127.0.0.1`` on an ephemeral port and start serving.

        Raises:
            RuntimeError: If the provider was already started or has been closed.
        """
        if self._runner is not None or self._closed:
            raise RuntimeError("FakeProvider can be started only once")
        app = web.Application()
        self._add_routes(app.router)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runner = runner
        try:
            # A deep backlog: tests open thousands of concurrent connections.
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
            await site.start()
            port = int(runner.addresses[0][1])
        except BaseException:
            await self.close()
            raise
        self._base_url = URL.build(scheme="http", host="127.0.0.1", port=port)

    async def close(self) -> None:
        """Stop serving and release the socket and every connection. Idempotent.

        Token calls still sleeping on a scripted ``delay`` are cut short (their connections
        are dropped).
        """
        self._closed = True
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeProvider:
        """Start the server; return this provider, started."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server."""
        await self.close()

    def __repr__(self) -> str:
        """``FakeProvider(dialect=..., base_url=...)``, without credentials."""
        where = str(self._base_url) if self._base_url is not None else "not started"
        return f"FakeProvider(dialect={self.dialect!r}, base_url={where!r})"

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> URL:
        """The server's root URL, e.g. ``URL("http://127.0.0.1:54321")``.

        Raises:
            RuntimeError: If the provider has not been started.
        """
        if self._base_url is None:
            raise RuntimeError("FakeProvider is not started")
        return self._base_url

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        Raises:
            RuntimeError: If the provider has not been started.
        """
        port = self.base_url.port
        if port is None:  # pragma: no cover - base_url always has an explicit port
            raise RuntimeError("the server has no port")
        return port

    @property
    def token_url(self) -> URL:
        """The dialect's token endpoint on this server.

        Raises:
            RuntimeError: If the provider has not been started.
        """
        return self.base_url.with_path(self._rules.token_path)

    @property
    def api_base(self) -> URL:
        """Base URL of the protected API (for ``"oro"``, the back-office API).

        Raises:
            RuntimeError: If the provider has not been started.
        """
        return self.base_url.with_path(self._rules.api_path)

    @property
    def storefront_api_base(self) -> URL:
        """Base URL of the storefront API (``"oro"`` only).

        Raises:
            AttributeError: If the dialect is not ``"oro"``.
            RuntimeError: If the provider has not been started.
        """
        path = self._rules.storefront_path
        if path is None:
            raise AttributeError("storefront_api_base exists only for the 'oro' dialect")
        return self.base_url.with_path(path)

    # ------------------------------------------------------------------ test controls

    def reset_counters(self) -> None:
        """Zero every counter and clear :attr:`rejected`; issued tokens stay valid."""
        self.token_calls = 0
        self.tokens_issued = 0
        self.api_calls = 0
        self.api_unauthorized = 0
        self.api_expired = 0
        self.chaos_faults = 0
        self.rejected.clear()
        self.last_api_authorization = None
        self.token_calls_by_client.clear()
        self.api_calls_by_client.clear()
        self.max_token_calls_in_flight = self.token_calls_in_flight

    # ------------------------------------------------------------------ routing

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        # The token route accepts every method so that a GET answers 405 from the token
        # handler (and counts as a token call) instead of falling through to the API route
        # that, for "cm", covers the token path's prefix.
        router.add_route("*", self._rules.token_path, self._token_endpoint)
        self._add_api(router, self._rules.api_path, KIND_API)
        if self._rules.storefront_path is not None:
            self._add_api(router, self._rules.storefront_path, KIND_STOREFRONT)
        router.add_get("/redirect", redirect)
        router.add_route("*", "/echo-headers", echo_headers)

    def _add_api(self, router: web.UrlDispatcher, base: str, kind: str) -> None:
        handler = self._api_handler(kind)
        router.add_route("*", base, handler)
        router.add_route("*", base + "/{tail:.*}", handler)

    # ------------------------------------------------------------------ protected API

    def _api_handler(self, kind: str) -> _Handler:
        admit = self._admit

        async def api(request: web.Request) -> web.StreamResponse:
            self.api_calls += 1
            values = request.headers.getall(hdrs.AUTHORIZATION, ())
            authorization = values[0] if len(values) == 1 else None
            self.last_api_authorization = authorization
            if authorization is not None and authorization[:7].lower() == "bearer ":
                client_id, expired = admit(authorization[7:].strip(), kind)
                if client_id is not None:
                    self.api_calls_by_client[client_id] += 1
                    return web.Response(
                        text=json.dumps({"ok": True, "path": request.path}),
                        content_type=JSON,
                    )
                self.api_expired += expired
            self.api_unauthorized += 1
            return web.Response(
                status=401,
                text=_INVALID_TOKEN_BODY,
                content_type=JSON,
                headers=_INVALID_TOKEN_HEADERS,
            )

        return api

    # ------------------------------------------------------------------ token endpoint

    async def _token_endpoint(self, request: web.Request) -> web.StreamResponse:
        self.token_calls += 1
        self.token_calls_in_flight += 1
        self.max_token_calls_in_flight = max(
            self.max_token_calls_in_flight, self.token_calls_in_flight
        )
        try:
            return await self._answer_token_call(request)
        except ConnectionResetError:
            # The client went away before its body arrived (a fetch cut short
            # while held by token_delay): nobody reads the answer, and it is
            # not an error of the server's to log with a traceback.
            return web.Response(status=400)
        finally:
            self.token_calls_in_flight -= 1

    async def _answer_token_call(self, request: web.Request) -> web.StreamResponse:
        script = self._next_fault()
        if script is not None:
            return await play(request, script, self._closing)
        if self.token_delay > 0:
            await pause(self._closing, self.token_delay)
        try:
            if request.method != hdrs.METH_POST:
                raise Rejection(
                    405,
                    "invalid_request",
                    f"method {request.method} not allowed; the token endpoint takes POST",
                    headers={hdrs.ALLOW: hdrs.METH_POST},
                )
            return await self._rules.answer(request, self._desk)
        except Rejection as rejection:
            return self._reject(rejection)

    def _reject(self, rejection: Rejection) -> web.Response:
        self.rejected.append(f"{self.dialect}: {rejection.description}")
        return json_response(self._rules.error_body(rejection), rejection.status, rejection.headers)
