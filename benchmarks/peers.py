"""Other ways of keeping a bearer token on asyncio requests, against the same fake.

Each is set up as its documentation suggests for the client-credentials
grant, with a pool the size of everyone else's:

* Authlib's ``AsyncOAuth2Client`` (httpx): fetches a token, then renews it
  under an ``anyio.Lock`` taken on every request (``ensure_active_token``).
* httpx-auth's ``OAuth2ClientCredentials`` on an ``httpx.AsyncClient``: a
  process-wide token cache behind a ``threading.Lock``.
* azure-core's ``AsyncBearerTokenCredentialPolicy`` in an ``AsyncPipeline``
  over ``AioHttpTransport``, with a small ``AsyncTokenCredential`` that
  asks the fake's token endpoint.
* A naive aiohttp middleware that takes an ``asyncio.Lock`` on every
  request to check (and, when due, refresh) the token.
* A naive background refresh: a task renews a shared token before it
  expires, and a plain aiohttp middleware stamps it on every request.
  No admission gate, so a request stamped and then queued in aiohttp's
  pool goes out with whatever it was stamped with.

Both naive ones renew at the same point (:func:`refresh_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from httpx_auth import OAuth2ClientCredentials

from .scenarios import Client, FetchLog, Scenario, aiohttp_pool, aiohttp_sender, fetch_token
from .server import Endpoint


with warnings.catch_warnings():
    # Authlib prefers its httpx2 fork and warns when it falls back to httpx,
    # which is the client it is compared on here. Importing authlib.deprecate
    # installs its own "always" filter, which ours must then precede.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
    )


_HTTPX_TIMEOUT = httpx.Timeout(120.0)  # the pool wait of 4096 queued requests included


def httpx_limits(limit: int) -> httpx.Limits:
    """The httpx equivalent of the aiohttp scenarios' pool."""
    return httpx.Limits(max_connections=limit, max_keepalive_connections=limit)


def httpx_sender(client: httpx.AsyncClient, endpoint: Endpoint) -> Callable[[], Awaitable[int]]:
    """The httpx equivalent of :func:`~benchmarks.scenarios.aiohttp_sender`."""
    url = endpoint.api_url

    async def send() -> int:
        resp = await client.get(url)
        return resp.status_code

    return send


# --- Authlib -------------------------------------------------------------------


@asynccontextmanager
async def open_authlib(
    endpoint: Endpoint, limit: int, *, leeway: float | None = None
) -> AsyncIterator[Client]:
    """Authlib as its documentation shows for client credentials.

    ``token_endpoint`` and ``grant_type`` set, the first token fetched up
    front, and an ``update_token`` callback (where an application stores
    each renewed token; here it notes when one arrives). *leeway*: seconds
    before expiry at which Authlib renews (its default, 60, when ``None``).
    """
    log = FetchLog()

    async def update_token(token: dict[str, Any], **kwargs: Any) -> None:
        log.published.append(time.perf_counter())

    margin = {} if leeway is None else {"leeway": leeway}
    async with AsyncOAuth2Client(
        client_id=endpoint.client_id,
        client_secret=endpoint.client_secret,
        token_endpoint=endpoint.token_url,
        grant_type="client_credentials",
        token_endpoint_auth_method="client_secret_basic",
        update_token=update_token,
        limits=httpx_limits(limit),
        timeout=_HTTPX_TIMEOUT,
        **margin,
    ) as client:
        await client.fetch_token()
        log.published.append(time.perf_counter())
        yield Client(httpx_sender(client, endpoint), fetches=log)


# --- httpx-auth ----------------------------------------------------------------


@asynccontextmanager
async def open_httpx_auth(
    endpoint: Endpoint, limit: int, *, early_expiry: float | None = None
) -> AsyncIterator[Client]:
    """httpx-auth's ``OAuth2ClientCredentials`` as the ``auth`` of an ``httpx.AsyncClient``.

    *early_expiry*: seconds before expiry at which httpx-auth renews (its
    default, 30, when ``None``).
    """
    margin = {} if early_expiry is None else {"early_expiry": early_expiry}
    auth = OAuth2ClientCredentials(
        endpoint.token_url,
        client_id=endpoint.client_id,
        client_secret=endpoint.client_secret,
        **margin,
    )
    async with httpx.AsyncClient(
        auth=auth, limits=httpx_limits(limit), timeout=_HTTPX_TIMEOUT
    ) as client:
        send = httpx_sender(client, endpoint)
        await send()  # the first request fetches the token (synchronously)
        yield Client(send)


# --- azure-core ---------------------------------------------------------------


class FakeProviderCredential:
    """An ``AsyncTokenCredential`` that asks the fake provider's token endpoint.

    Without ``refresh_on`` (``AccessToken``), the policy renews a token
    once it has less than five minutes left: on every request, for tokens
    shorter than that.
    """

    def __init__(self, endpoint: Endpoint, log: FetchLog | None = None) -> None:
        self._endpoint = endpoint
        self._session = aiohttp.ClientSession()
        self._log = log

    async def _fetch(self) -> tuple[str, float]:
        """One token request; notes its publication (the policy stores it at once)."""
        if self._log is not None:
            self._log.started += 1
        answer = await fetch_token(self._session, self._endpoint)
        if self._log is not None:
            self._log.published.append(time.perf_counter())
        return answer

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        token, lifetime = await self._fetch()
        return AccessToken(token, int(time.time() + lifetime))

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


class RefreshOnCredential(FakeProviderCredential):
    """The same credential with ``get_token_info`` (azure-core >= 1.31), which the policy
    prefers: an ``AccessTokenInfo`` whose ``refresh_on`` asks for renewal at
    :func:`refresh_after` (half the lifetime for short tokens), as azure-identity
    does for long-lived ones. Both times are whole Unix seconds, as the type says.
    The policy adds up to 60 s of random jitter to ``refresh_on``, capped at
    ``expires_on``: a token shorter than that is renewed once ``expires_on``
    has passed.
    """

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        token, lifetime = await self._fetch()
        now = time.time()
        return AccessTokenInfo(
            token, int(now + lifetime), refresh_on=int(now + refresh_after(lifetime))
        )


@asynccontextmanager
async def open_azure(
    endpoint: Endpoint, limit: int, *, refresh_on: bool = False
) -> AsyncIterator[Client]:
    """azure-core's bearer policy over aiohttp; *refresh_on*: the credential says when."""
    log = FetchLog()
    kind = RefreshOnCredential if refresh_on else FakeProviderCredential
    async with (
        kind(endpoint, log) as credential,
        aiohttp.ClientSession(connector=aiohttp_pool(limit)) as http,
    ):
        policy = AsyncBearerTokenCredentialPolicy(credential, "api://bench/.default")
        transport = AioHttpTransport(session=http, session_owner=False)
        async with AsyncPipeline(transport, policies=[policy]) as pipeline:
            url = endpoint.api_url

            async def send() -> int:
                # Plain HTTP to 127.0.0.1: the policy refuses it unless told.
                result = await pipeline.run(HttpRequest("GET", url), enforce_https=False)
                return int(result.http_response.status_code)

            yield Client(send, fetches=log)


# --- naive middlewares -----------------------------------------------------------


def refresh_after(lifetime: float) -> float:
    """When the naive peers renew a token: its lifetime less min(60 s, half of it)."""
    return lifetime - min(60.0, lifetime / 2)


class LockPerRequestAuth:
    """aiohttp middleware: an ``asyncio.Lock`` around every token check.

    The pattern a first version often has: correct (one fetch at a time),
    but every request queues on the lock, and a refresh holds all of them.
    """

    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, log: FetchLog | None = None
    ) -> None:
        self._endpoint = endpoint
        self._session = session
        self._log = log
        self._lock = asyncio.Lock()
        self.header: str | None = None
        self.refresh_at = 0.0

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        async with self._lock:
            if self.header is None or time.monotonic() >= self.refresh_at:
                token, lifetime = await fetch_token(self._session, self._endpoint)
                self.header = "Bearer " + token
                self.refresh_at = time.monotonic() + refresh_after(lifetime)
                if self._log is not None:
                    self._log.published.append(time.perf_counter())
            header = self.header
        request.headers[hdrs.AUTHORIZATION] = header
        return await handler(request)


@asynccontextmanager
async def open_lock_per_request(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    log = FetchLog()
    async with aiohttp.ClientSession() as token_session:
        auth = LockPerRequestAuth(endpoint, token_session, log)
        async with aiohttp.ClientSession(connector=aiohttp_pool(limit), middlewares=[auth]) as http:
            yield Client(aiohttp_sender(http, endpoint), fetches=log)


class BackgroundRefreshAuth:
    """aiohttp middleware that stamps a shared header; a task renews it before expiry.

    The other pattern a first version often has: no lock and no wait on
    the request path, a task that fetches a new token at
    :func:`refresh_after` and swaps the shared header. Nothing holds a
    stamped request back from waiting in aiohttp's pool after stamping,
    so under saturation one can leave with a token that expired while it
    queued. A failed renewal is retried every 100 ms.
    """

    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, log: FetchLog | None = None
    ) -> None:
        self._endpoint = endpoint
        self._session = session
        self._log = log if log is not None else FetchLog()
        self.header = ""
        self._task: asyncio.Task[None] | None = None

    async def _fetch(self) -> float:
        """Fetch a token, swap the header in; returns the token's lifetime."""
        self._log.started += 1
        token, lifetime = await fetch_token(self._session, self._endpoint)
        self.header = "Bearer " + token
        self._log.published.append(time.perf_counter())
        return lifetime

    async def start(self) -> None:
        """The first token, then the renewing task."""
        lifetime = await self._fetch()
        self._task = asyncio.create_task(self._renew(refresh_after(lifetime)))

    async def _renew(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                delay = refresh_after(await self._fetch())
            except (aiohttp.ClientError, ValueError, KeyError):
                self._log.failed += 1
                delay = 0.1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        request.headers[hdrs.AUTHORIZATION] = self.header
        return await handler(request)


@asynccontextmanager
async def open_background_refresh(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    log = FetchLog()
    async with aiohttp.ClientSession() as token_session:
        auth = BackgroundRefreshAuth(endpoint, token_session, log)
        await auth.start()
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp_pool(limit), middlewares=[auth]
            ) as http:
                yield Client(aiohttp_sender(http, endpoint), fetches=log)
        finally:
            await auth.stop()


PEERS = (
    Scenario("authlib", "Authlib AsyncOAuth2Client (httpx)", "peer", "long", open_authlib),
    Scenario(
        "httpx-auth", "httpx-auth OAuth2ClientCredentials (httpx)", "peer", "long", open_httpx_auth
    ),
    Scenario(
        "azure-core",
        "azure-core AsyncBearerTokenCredentialPolicy (AioHttpTransport)",
        "peer",
        "long",
        open_azure,
    ),
    Scenario(
        "lock-per-request",
        "naive aiohttp middleware, asyncio.Lock on every request",
        "peer",
        "long",
        open_lock_per_request,
    ),
    Scenario(
        "lock-per-request-1s",
        "the same naive middleware with 1-second tokens (refreshes inline, under the lock)",
        "peer",
        "short",
        open_lock_per_request,
    ),
)
