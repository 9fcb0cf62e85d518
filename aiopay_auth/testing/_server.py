"""A loopback OAuth2 provider that impersonates one payment provider's token endpoint.

:class:`FakeProvider` runs a real :mod:`aiohttp.web` server on ``127.0.0.1`` (an ephemeral
port) that serves:

* a token endpoint speaking exactly one provider *dialect* (``"cm"``, ``"vonage"``,
  ``"payme"``, ``"oro"`` or plain ``"rfc6749"``), rejecting anything the real provider would
  reject with the error the real provider would send;
* a protected API under :attr:`FakeProvider.api_base` (and, for ``"oro"``, a second one
  under :attr:`FakeProvider.storefront_api_base`) that accepts only live bearer tokens this
  server issued;
* two unprotected helpers: ``GET /redirect?to=<url>`` (a redirect, to check that a bearer
  token never follows a redirect to another origin) and ``/echo-headers`` (returns the
  request headers as JSON).

Counters (:attr:`FakeProvider.token_calls`, :attr:`FakeProvider.api_unauthorized`, ...) and
:attr:`FakeProvider.rejected` let tests assert what a client did, and
:meth:`FakeProvider.queue` scripts misbehaving token responses (:class:`Scripted`).

This module is the server every dialect shares (lifecycle, routing, the protected API, scripts,
counters, the tokens it issued); what differs between providers lives in one module per
dialect under ``_dialects/`` (:class:`~._dialects.DialectRules`), which the server asks.

Example::

    async with FakeProvider("cm") as provider:
        ...  # point a client at provider.token_url and provider.api_base
        assert provider.tokens_issued == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NamedTuple

import attrs
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from ._dialects import DIALECTS, Dialect, DialectRules, Rejection
from ._dialects._wire import JSON, json_response, same


__all__ = ["Dialect", "FakeProvider", "Scripted"]

# Token kinds: which protected API a token is good for. "api" is the dialect's main API
# (Oro's back office); "storefront" the second API of a dialect that has one (Oro's).
_KIND_API: Final = "api"
_KIND_STOREFRONT: Final = "storefront"

_INVALID_TOKEN_BODY: Final = json.dumps({"error": "invalid_token"})
_INVALID_TOKEN_HEADERS: Final[Mapping[str, str]] = {
    "WWW-Authenticate": 'Bearer error="invalid_token"'
}
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen(kw_only=True)
class Scripted:
    """A canned answer for one token call, queued with :meth:`FakeProvider.queue`.

    Attributes:
        status: HTTP status code to answer with.
        json: Body to send as JSON (``Content-Type: application/json`` unless ``headers``
            says otherwise). Mutually exclusive with ``body``.
        body: Raw body to send (for an HTML error page, truncated JSON, ...). Sent with
            ``Content-Type: text/plain; charset=utf-8`` unless ``headers`` sets one.
        headers: Extra response headers, e.g. ``{"Retry-After": "2"}``.
        delay: Seconds to wait before answering (or dropping), to simulate a slow endpoint.
        drop: Close the connection without sending any response.
        truncate: Send the status, the headers (with the full ``Content-Length``) and only
            this many bytes of the body, then reset the connection: a reset mid-body.
        chunked: Send the body with chunked transfer encoding (no ``Content-Length``).
    """

    status: int = 200
    json: object | None = None
    body: bytes | str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    drop: bool = False
    truncate: int | None = None
    chunked: bool = False

    def __attrs_post_init__(self) -> None:
        """Reject contradictory or impossible scripts early.

        Raises:
            ValueError: If both ``json`` and ``body`` are given, ``delay`` is negative or
                ``status`` is not a valid HTTP status code.
        """
        if self.json is not None and self.body is not None:
            raise ValueError("Scripted takes json or body, not both")
        if self.delay < 0:
            raise ValueError("Scripted.delay must not be negative")
        if self.truncate is not None and self.truncate < 0:
            raise ValueError("Scripted.truncate must not be negative")
        if not 100 <= self.status <= 599:
            raise ValueError("Scripted.status must be an HTTP status code (100-599)")


class _Access(NamedTuple):
    expires_at: float
    kind: str
    client_id: str


class _Refresh(NamedTuple):
    kind: str
    client_id: str


def _wire_lifetime(lifetime: float) -> int | float:
    """The ``expires_in`` reported for a lifetime, exactly the value enforced.

    A JSON integer when the lifetime is whole (as real servers send), else the same float,
    which JSON carries exactly (``repr`` round-trips), so client and server agree to the bit.
    """
    seconds = float(lifetime)
    return int(seconds) if seconds.is_integer() else seconds


class FakeProvider:
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
        self.dialect: Dialect = dialect
        self._rules: DialectRules = DIALECTS[dialect]
        self._desk = _TokenDesk(self)
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

        self._clients: dict[str, list[str]] = {}
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._scripts: deque[Scripted] = deque()
        self._chaos_rate = 0.0
        self._chaos_faults: tuple[Scripted, ...] = ()
        self._chaos_rng = random.Random()  # noqa: S311 - fault injection, not crypto
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
        """Start the server.

        Returns:
            This provider, started.
        """
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server.

        Args:
            exc_type: Exception type raised in the block, if any.
            exc: Exception raised in the block, if any.
            tb: Its traceback, if any.
        """
        await self.close()

    def __repr__(self) -> str:
        """Describe the provider without revealing credentials.

        Returns:
            ``FakeProvider(dialect=..., base_url=...)``.
        """
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

    def queue(self, *responses: Scripted) -> None:
        """Script the answers to the next token calls, first in first out.

        Each scripted response is consumed by one token call (counted in
        :attr:`token_calls`) instead of the normal handling: nothing is validated and no
        token is issued (an ``access_token`` in a scripted body is unknown to the API).

        Args:
            *responses: The answers, in the order the token calls will receive them.
        """
        self._scripts.extend(responses)

    def fail_randomly(self, rate: float, *faults: Scripted, seed: int | None = None) -> None:
        """Answer a random share of unscripted token calls with a random fault.

        Each token call that finds the :meth:`queue` empty is, with probability *rate*,
        answered by one of *faults* chosen at random (counted in :attr:`chaos_faults`);
        the others are handled normally. ``fail_randomly(0)`` turns it off.

        Args:
            rate: The share of token calls to fail, from 0 to 1.
            *faults: The faults to choose from.
            seed: Seed for a reproducible sequence.

        Raises:
            ValueError: If *rate* is outside [0, 1] or no fault is given for a rate above 0.
        """
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not faults:
            raise ValueError("fail_randomly needs at least one fault")
        self._chaos_rate = rate
        self._chaos_faults = faults
        self._chaos_rng = random.Random(seed)  # noqa: S311 - fault injection, not crypto

    def add_client(
        self, client_id: str | None = None, client_secret: str | None = None
    ) -> tuple[str, str]:
        """Accept one more client credential, as a provider does for each merchant.

        Its tokens are good for the same API as the default client's. Adding a second
        secret to a known client id accepts both (a rotation's grace period) until
        :meth:`remove_client` drops one.

        Args:
            client_id: The id; a new ``merchant-<n>`` when ``None``.
            client_secret: The secret; a random one when ``None``.

        Returns:
            The ``(client_id, client_secret)`` pair, for :func:`provider_for`'s
            ``client_id=`` and ``client_secret=``.
        """
        if client_id is None:
            client_id = f"merchant-{len(self._clients) + 1}"
            while client_id in self._clients:
                client_id += "x"
        if client_secret is None:
            client_secret = secrets.token_urlsafe(24)
        self._clients.setdefault(client_id, []).append(client_secret)
        return client_id, client_secret

    def remove_client(self, client_id: str, client_secret: str | None = None) -> bool:
        """Stop accepting one secret of a client added with :meth:`add_client`, or all of it.

        Tokens already issued to it stay valid until they expire (see :meth:`revoke_all`).

        Returns:
            Whether there was something to remove.
        """
        known = self._clients.get(client_id)
        if known is None or (client_secret is not None and client_secret not in known):
            return False
        if client_secret is None:
            known.clear()
        else:
            known.remove(client_secret)
        if not known:
            del self._clients[client_id]
        return True

    def spend_refresh_token(self, refresh_token: str) -> bool:
        """Mark a refresh token as used elsewhere (another process spent it).

        Args:
            refresh_token: A refresh token this server issued.

        Returns:
            Whether it was still valid.
        """
        return self._refresh.pop(refresh_token, None) is not None

    def revoke_all(self) -> None:
        """Invalidate every access token issued so far; the API answers 401 to them.

        Refresh tokens stay valid, so a client can recover through a refresh grant.
        """
        self._access.clear()

    # ------------------------------------------------------------------ routing

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        # The token route accepts every method so that a GET answers 405 from the token
        # handler (and counts as a token call) instead of falling through to the API route
        # that, for "cm", covers the token path's prefix.
        router.add_route("*", self._rules.token_path, self._token_endpoint)
        self._add_api(router, self._rules.api_path, _KIND_API)
        if self._rules.storefront_path is not None:
            self._add_api(router, self._rules.storefront_path, _KIND_STOREFRONT)
        router.add_get("/redirect", self._redirect)
        router.add_route("*", "/echo-headers", self._echo_headers)

    def _add_api(self, router: web.UrlDispatcher, base: str, kind: str) -> None:
        handler = self._api_handler(kind)
        router.add_route("*", base, handler)
        router.add_route("*", base + "/{tail:.*}", handler)

    # ------------------------------------------------------------------ protected API

    def _api_handler(self, kind: str) -> _Handler:
        access = self._access  # revoke_all() clears this dict in place

        async def api(request: web.Request) -> web.StreamResponse:
            self.api_calls += 1
            values = request.headers.getall(hdrs.AUTHORIZATION, ())
            authorization = values[0] if len(values) == 1 else None
            self.last_api_authorization = authorization
            if authorization is not None and authorization[:7].lower() == "bearer ":
                info = access.get(authorization[7:].strip())
                if info is not None:
                    if info.expires_at > self.clock():
                        if info.kind == kind:
                            self.api_calls_by_client[info.client_id] += 1
                            return web.Response(
                                text=json.dumps({"ok": True, "path": request.path}),
                                content_type=JSON,
                            )
                    else:
                        self.api_expired += 1
            self.api_unauthorized += 1
            return web.Response(
                status=401,
                text=_INVALID_TOKEN_BODY,
                content_type=JSON,
                headers=_INVALID_TOKEN_HEADERS,
            )

        return api

    # ------------------------------------------------------------------ helpers

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        target = request.query.get("to")
        if not target:
            raise web.HTTPBadRequest(text="missing 'to' query parameter")
        try:
            status = int(request.query.get("status", "302"))
        except ValueError:
            status = 0
        if status not in _REDIRECT_STATUSES:
            raise web.HTTPBadRequest(text="'status' must be one of 301, 302, 303, 307, 308")
        return web.Response(status=status, headers={hdrs.LOCATION: target})

    async def _echo_headers(self, request: web.Request) -> web.StreamResponse:
        echoed: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            echoed[key] = f"{echoed[key]}, {value}" if key in echoed else value
        return web.json_response(echoed)

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
        if self._scripts:
            return await self._play(request, self._scripts.popleft())
        if self._chaos_rate and self._chaos_rng.random() < self._chaos_rate:
            self.chaos_faults += 1
            return await self._play(request, self._chaos_rng.choice(self._chaos_faults))
        if self.token_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.token_delay)
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

    async def _play(self, request: web.Request, script: Scripted) -> web.StreamResponse:
        if script.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), script.delay)
        if script.drop or self._closing.is_set():
            await request.release()
            transport = request.transport
            if transport is not None:
                transport.close()
            # Writing this response fails on the closed transport, which aiohttp treats
            # as a client disconnection: nothing reaches the client.
            return web.Response(status=500)
        headers: CIMultiDict[str] = CIMultiDict(script.headers)
        body: bytes = b""
        if script.json is not None:
            body = json.dumps(script.json).encode()
            headers.setdefault(hdrs.CONTENT_TYPE, JSON)
        elif script.body is not None:
            body = script.body.encode() if isinstance(script.body, str) else script.body
            headers.setdefault(hdrs.CONTENT_TYPE, "text/plain; charset=utf-8")
        if script.truncate is None and not script.chunked:
            return web.Response(status=script.status, body=body, headers=headers)
        response = web.StreamResponse(status=script.status, headers=headers)
        if script.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        if script.truncate is None:
            for start in range(0, len(body), 4096):
                await response.write(body[start : start + 4096])
            await response.write_eof()
            return response
        await response.write(body[: script.truncate])
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response

    # ------------------------------------------------------------------ token desk

    def _check_client(self, client_id: str, client_secret: str, *, basic: bool) -> str:
        """Authenticate the client and return the token kind it gets."""
        self.token_calls_by_client[client_id] += 1
        headers = {"WWW-Authenticate": 'Basic realm="token"'} if basic else None
        accepted = [self.client_secret]
        if self._rules.storefront_path is not None and same(client_id, self.storefront_client_id):
            kind = _KIND_STOREFRONT
        elif same(client_id, self.client_id):
            kind = _KIND_API
        elif client_id in self._clients:
            kind = _KIND_API
            accepted = self._clients[client_id]
        else:
            raise Rejection(401, "invalid_client", "unknown client_id", headers=headers)
        if not any(same(client_secret, secret) for secret in accepted):
            raise Rejection(401, "invalid_client", "wrong client_secret", headers=headers)
        return kind

    def _check_user(self, username: str, password: str, status: int = 400) -> None:
        if not (same(username, self.username) and same(password, self.password)):
            raise Rejection(status, "invalid_grant", "wrong username or password")

    def _wants_refresh(self, default: bool) -> bool:
        if self.issue_refresh_tokens is not None:
            return self.issue_refresh_tokens
        return default

    def _spend_refresh(self, refresh_token: str, client_id: str) -> tuple[str, bool]:
        """Validate a refresh token; return its kind and whether to issue a new one."""
        info = self._refresh.get(refresh_token)
        if info is None:
            raise Rejection(400, "invalid_grant", "refresh token is invalid", oauth=True)
        if not same(info.client_id, client_id):
            raise Rejection(
                400, "invalid_grant", "refresh token was issued to another client", oauth=True
            )
        if self.rotate_refresh_tokens:
            del self._refresh[refresh_token]
            return info.kind, True
        return info.kind, False

    def _issue(self, kind: str, client_id: str, *, with_refresh: bool) -> dict[str, Any]:
        expires_in = _wire_lifetime(self.lifetime)
        access_token = secrets.token_urlsafe(32)
        # The one rule: the token dies at issue time + exactly what the answer reports.
        self._access[access_token] = _Access(self.clock() + expires_in, kind, client_id)
        self.issued_tokens.add(access_token)
        self.tokens_issued += 1
        payload: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": expires_in,
            "token_type": self._rules.token_type,
        }
        if with_refresh:
            refresh_token = secrets.token_urlsafe(32)
            self._refresh[refresh_token] = _Refresh(kind, client_id)
            self.issued_refresh_tokens.add(refresh_token)
            payload["refresh_token"] = refresh_token
        return payload


@attrs.frozen
class _TokenDesk:
    """A :class:`~._dialects.TokenDesk` on a server: its dialect's only way back into it."""

    _server: FakeProvider

    @property
    def username(self) -> str:
        return self._server.username

    @property
    def audience(self) -> str:
        return self._server.audience

    def check_client(self, client_id: str, client_secret: str, *, basic: bool) -> str:
        return self._server._check_client(client_id, client_secret, basic=basic)

    def check_user(self, username: str, password: str, status: int = 400) -> None:
        self._server._check_user(username, password, status)

    def spend_refresh(self, refresh_token: str, client_id: str) -> tuple[str, bool]:
        return self._server._spend_refresh(refresh_token, client_id)

    def wants_refresh(self, default: bool) -> bool:
        return self._server._wants_refresh(default)

    def issue(self, kind: str, client_id: str, *, with_refresh: bool) -> dict[str, Any]:
        return self._server._issue(kind, client_id, with_refresh=with_refresh)
