"""How the manager wires its parts: the sessions it builds, the bounds it passes, its errors.

Real servers on 127.0.0.1: the independent token endpoint of
``tests/endpoints.py`` and the ``aiopay_auth.testing`` FakeProvider.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import aiohttp
import anyio
import pytest
from aiohttp import web

from aiopay_auth import ConfigError, RefreshPolicy, TokenManager, TokenUnavailableError
from aiopay_auth.testing import provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .endpoints import WebEndpoint, make_provider, token_json
from .helpers import eventually


pytestmark = pytest.mark.anyio


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(name="records")
def _records() -> Iterator[list[logging.LogRecord]]:
    handler = Collect()
    logger = logging.getLogger("aiopay_auth")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


class Silent:
    """A token endpoint that answers nothing until released (then the server can stop)."""

    def __init__(self) -> None:
        self.release = anyio.Event()

    async def __call__(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return token_json("late", 3600)


# --------------------------------------------------------------------------- sessions


async def test_a_session_stamps_its_providers_tokens_and_has_the_pool_asked_for(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        async with tokens.session(holder, limit=3, limit_per_host=2) as http:
            async with http.get(fake.api_base / "x") as resp:
                assert 200 == resp.status
            assert f"Bearer {token.access_token}" == fake.last_api_authorization
            assert isinstance(http.connector, aiohttp.TCPConnector)
            assert (3, 2) == (http.connector.limit, http.connector.limit_per_host)
        async with tokens.session(holder) as http:
            assert isinstance(http.connector, aiohttp.TCPConnector)
            assert (100, 0) == (http.connector.limit, http.connector.limit_per_host)
        smallest = tokens.session(holder, limit=1)
        async with smallest, smallest.get(fake.api_base / "x") as resp:
            assert 200 == resp.status
        bare = tokens.session()  # no provider: nothing stamped
        async with bare, bare.get(fake.api_base / "x") as resp:
            assert 401 == resp.status
    assert 3 == fake.api_calls


@pytest.mark.parametrize("pool", [1, 2])
async def test_token_requests_share_a_pool_of_token_pool_size_connections(
    endpoint: WebEndpoint, pool: int
) -> None:
    """Two providers fetch at once; the token endpoint sees at most *pool* requests at a time."""
    in_flight = peak = 0
    both = anyio.Event()

    async def token(_: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            both.set()
        with anyio.move_on_after(1.0):  # the second request, if it can come, comes
            await both.wait()
        in_flight -= 1
        return token_json("tok", 3600)

    endpoint.handler = token
    async with TokenManager(token_pool_size=pool) as tokens:
        first = tokens.add(make_provider(endpoint.base, name="first"))
        second = tokens.add(make_provider(endpoint.base, name="second"))
        await first.get()
        await second.get()
    assert pool == peak


async def test_a_token_request_is_cut_at_the_policys_fetch_timeout(
    endpoint: WebEndpoint,
) -> None:
    endpoint.handler = silent = Silent()
    policy = RefreshPolicy(fetch_timeout=0.2, backoff_initial=0.01, backoff_max=0.01)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        # The default bound is 10 s; the policy's 0.2 s cuts it long before.
        await eventually(lambda: holder.stats.failures >= 1, within=5)
    silent.release.set()
    assert {"timeout"} == set(holder.stats.failures_by_kind)


async def test_token_waits_at_most_the_timeout_given(endpoint: WebEndpoint) -> None:
    endpoint.handler = silent = Silent()
    async with TokenManager() as tokens:  # a 30 s wait bound
        holder = tokens.add(make_provider(endpoint.base))
        with anyio.fail_after(10), pytest.raises(TokenUnavailableError, match="wait bound"):
            await tokens.token(holder, timeout=0.1)
    silent.release.set()


# --------------------------------------------------------------------------- closing


async def test_closing_is_logged_with_the_number_of_providers(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    endpoint.handler = lambda _: _token_answer()
    async with TokenManager() as tokens:
        tokens.add(make_provider(endpoint.base, name="first"))
        tokens.add(make_provider(endpoint.base, name="second"))
    closed = [
        (r.levelno, getattr(r, "aiopay_auth", {}))
        for r in records
        if getattr(r, "aiopay_auth", {}).get("event") == "aiopay_auth.manager_closed"
    ]
    assert [(logging.DEBUG, {"event": "aiopay_auth.manager_closed", "providers": 2})] == closed
    await tokens.aclose()  # idempotent: not logged again
    assert 1 == sum("manager_closed" in r.getMessage() for r in records)


async def _token_answer() -> web.Response:
    return token_json("tok", 3600)


# --------------------------------------------------------------------------- misuse


async def test_misuse_errors_say_what_was_wrong_and_name_the_provider(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    profile = provider_for(fake)
    with pytest.raises(ConfigError) as caught:
        TokenManager().add(profile)
    assert ("add providers inside 'async with TokenManager()'", "cm") == (
        caught.value.message,
        caught.value.provider,
    )
    with pytest.raises(ConfigError) as caught:
        TokenManager().session()
    assert ("use session() inside 'async with TokenManager()'", None) == (
        caught.value.message,
        caught.value.provider,
    )
    async with TokenManager() as tokens, TokenManager() as other:
        holder = tokens.add(profile)
        with pytest.raises(ConfigError) as caught:
            tokens.add(profile)
        assert ("a provider named 'cm' was already added", "cm") == (
            caught.value.message,
            caught.value.provider,
        )
        for misuse in (
            lambda: other.middleware(holder),
            lambda: other.session(holder),
        ):
            with pytest.raises(ConfigError) as caught:
                misuse()
            assert ("provider 'cm' was not added to this manager", "cm") == (
                caught.value.message,
                caught.value.provider,
            )
        with pytest.raises(ConfigError) as caught:
            await other.token(holder)
        assert "provider 'cm' was not added to this manager" == caught.value.message
        with pytest.raises(ConfigError, match=r"^a holder must be a TokenHolder, not a str$"):
            tokens.middleware("cm")  # type: ignore[arg-type]
        for kwarg in ("connector", "middlewares"):
            with pytest.raises(ConfigError) as caught:
                tokens.session(holder, **{kwarg: None})  # type: ignore[arg-type]
            assert "session() builds its own connector and middlewares" == caught.value.message
        with pytest.raises(ConfigError, match=r"^session\(\) limit must be at least 1, not 0$"):
            tokens.session(holder, limit=0)
        with pytest.raises(
            ConfigError, match=r"^session\(\) limit_per_host must be at least 0, not -1$"
        ):
            tokens.session(holder, limit_per_host=-1)
    with pytest.raises(ConfigError) as caught:
        tokens.add(provider_for(fake, name="late"))
    assert ("cannot add providers: this TokenManager is closed", "late") == (
        caught.value.message,
        caught.value.provider,
    )
