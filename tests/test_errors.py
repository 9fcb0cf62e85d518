"""The error trees as a worker's handlers meet them (see ``aiopay_auth.exceptions``).

* A request through an aiohttp session that gets no token raises an error
  that ``except aiohttp.ClientError`` catches, and that is still a
  ``TokenUnavailableError`` (an ``AuthError``) with its last failure.
* A ``ConfigError`` is not an ``AuthError``: an ``except AuthError`` that
  retries lets it through, also when a session request raises it
  (``TenantRequiredError``), and so does ``except aiohttp.ClientError``.

Every server is real, on 127.0.0.1.
"""

from __future__ import annotations

import pickle
import socket
import time
from collections.abc import Iterator

import aiohttp
import anyio
import pytest
from yarl import URL

from aiopay_auth import (
    AuthError,
    ClientTenantRemovedError,
    ClientTokenUnavailableError,
    ConfigError,
    Provider,
    RefreshPolicy,
    Secret,
    TenantRemovedError,
    TenantRequiredError,
    Token,
    TokenHolder,
    TokenManager,
    TokenRequestError,
    TokenResponseError,
    TokenSource,
    TokenUnavailableError,
)
from aiopay_auth.testing import provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .tenant_endpoint import tenant_api


pytestmark = pytest.mark.anyio


@pytest.fixture(name="refusing_port")
def _refusing_port() -> Iterator[int]:
    """A loopback port bound by nobody listening: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["down", "refusing"])
async def test_a_session_request_with_no_token_is_an_aiohttp_client_error(
    fake_provider: FakeProviderFactory, refusing_port: int, endpoint: str
) -> None:
    fake = await fake_provider("cm", lifetime=60)
    if endpoint == "down":  # nothing answers at the token URL: retryable, at the wait bound
        profile = provider_for(fake, token_url=f"http://127.0.0.1:{refusing_port}/token")
    else:  # the endpoint says invalid_client: not retryable, at once
        profile = provider_for(fake, client_secret="not-the-secret")
    caught: BaseException | None = None
    async with TokenManager(policy=RefreshPolicy(wait_timeout=0.5)) as tokens:
        pay = tokens.add(profile)
        async with tokens.session(pay) as http:
            try:
                async with http.get(URL(fake.api_base) / "payments"):
                    pytest.fail("sent without a token")
            except aiohttp.ClientError as err:  # what a worker already has around requests
                caught = err
        with pytest.raises(TokenUnavailableError) as direct:
            await pay.get()  # no aiohttp involved: the plain class
    assert isinstance(caught, ClientTokenUnavailableError)
    assert isinstance(caught, AuthError)  # and so a TokenUnavailableError
    assert pay.name == caught.provider
    if endpoint == "down":
        assert caught.retryable
        assert isinstance(caught.last_error, TokenRequestError)
        assert "no usable token within the wait bound" in str(caught)
    else:
        assert not caught.retryable
        assert isinstance(caught.last_error, TokenResponseError)
        assert "invalid_client" == caught.last_error.error
    assert caught.__cause__ is caught.last_error  # the last failure stays chained
    assert caught.__context__ is None  # the holder's copy of the same error is not
    assert 0 == fake.api_calls  # nothing was sent without a token
    assert not isinstance(direct.value, aiohttp.ClientError)
    restored = pickle.loads(pickle.dumps(caught))  # noqa: S301
    assert type(caught) is type(restored)
    assert (str(caught), caught.retryable) == (str(restored), restored.retryable)


async def test_a_removed_tenants_session_request_is_an_aiohttp_client_error() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        middlewares = merchants.add(key, server.provider(key, secret)).middlewares
        await merchants.remove(key)
        async with tokens.session(merchants) as http:
            with pytest.raises(aiohttp.ClientError) as caught:
                await http.get(server.api, middlewares=middlewares)
    assert isinstance(caught.value, ClientTenantRemovedError)
    assert isinstance(caught.value, TenantRemovedError)
    assert isinstance(caught.value, ClientTokenUnavailableError)
    assert not caught.value.retryable
    assert [] == server.api_calls


def test_except_auth_error_does_not_catch_a_config_error() -> None:
    caught: ConfigError | None = None
    try:
        Provider(
            name="p",
            token_url="https://auth.example/token",
            api="https://api.example",
            client_id="",
            client_secret="secret",
        )
    except AuthError:  # a worker's retry handler
        pytest.fail("a ConfigError was caught by except AuthError")
    except ConfigError as err:
        caught = err
    assert caught is not None
    assert "client_id must not be empty" in str(caught)
    assert issubclass(ConfigError, ValueError)
    assert not issubclass(ConfigError, AuthError)
    assert issubclass(TenantRequiredError, ConfigError)


async def test_a_request_that_chose_no_tenant_escapes_the_retry_handlers() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        async with tokens.session(merchants) as http:
            caught: TenantRequiredError | None = None
            try:
                await http.get(server.api / "merchants" / key / "charges")
            except (AuthError, aiohttp.ClientError):
                pytest.fail("a programming error was caught as a failure to retry")
            except TenantRequiredError as err:
                caught = err
    assert caught is not None
    assert [] == server.api_calls


async def test_a_config_error_from_a_token_source_fails_waiters_at_once() -> None:
    # As before ConfigError left AuthError's tree: recorded as the last
    # failure as it is, never retryable, so waiters do not sit out the bound.
    class Misconfigured:
        async def fetch(self, refresh_token: Secret | None) -> Token:
            raise ConfigError("the store's key is not a Fernet key", provider="p")

    def source(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        return Misconfigured()

    profile = Provider(
        name="p",
        token_url="https://auth.example/token",
        api="https://api.example",
        client_id="id",
        client_secret="secret",
    )
    async with TokenManager(policy=RefreshPolicy(wait_timeout=10), token_source=source) as tokens:
        holder = tokens.add(profile)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TokenUnavailableError) as caught:
            await holder.get()
        assert time.monotonic() - started < 2
        assert isinstance(holder.last_error, ConfigError)
        assert "config" == holder.health().last_error_kind
    assert caught.value.last_error is holder.last_error
    assert not caught.value.retryable
