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
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from azure.core.credentials import AccessToken
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
    """An ``AsyncTokenCredential`` that asks the fake provider's token endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._session = aiohttp.ClientSession()

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        token, lifetime = await fetch_token(self._session, self._endpoint)
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


@asynccontextmanager
async def open_azure(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    async with (
        FakeProviderCredential(endpoint) as credential,
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

            yield Client(send)


# --- a naive lock-per-request middleware --------------------------------------


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
                self.refresh_at = time.monotonic() + lifetime - min(60.0, lifetime / 2)
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
