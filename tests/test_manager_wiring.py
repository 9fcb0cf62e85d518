"""How the manager wires its parts: the sessions it builds, the bounds it passes, its errors.

Real servers on 127.0.0.1: the independent token endpoint of
``tests/endpoints.py`` and the ``aiopay_auth.testing`` FakeProvider.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from aiopay_auth import (
    ConfigError,
    Network,
    RefreshPolicy,
    TokenHolder,
    TokenManager,
    TokenSource,
    TokenUnavailableError,
)
from aiopay_auth.testing import provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .endpoints import WebEndpoint, make_provider, token_json
from .helpers import ManualClock, eventually


pytestmark = pytest.mark.anyio


class Silent:
    """A token endpoint that answers nothing until released (then the server can stop)."""

    def __init__(self) -> None:
        self.release = anyio.Event()

    async def __call__(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return token_json("late", 3600)


@pytest.fixture(name="silent")
async def _silent(endpoint: WebEndpoint) -> AsyncIterator[Silent]:
    """The endpoint, answering nothing until the test ends (even a failed one)."""
    endpoint.handler = silent = Silent()
    try:
        yield silent
    finally:
        silent.release.set()  # or the server's shutdown would wait for the handler


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


class Gate:
    """A token endpoint that counts the requests in flight at once.

    Each request is held until *expected* are in flight together, then a
    little longer in case one more comes: with a pool of *expected*
    connections none can, with a larger one it does.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = self.peak = 0
        self.full = anyio.Event()
        self.extra = anyio.Event()

    async def __call__(self, _: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.expected:
            self.full.set()
        if self.in_flight > self.expected:
            self.extra.set()
        try:
            with anyio.move_on_after(10):  # bounded: a failed test must end
                await self.full.wait()
            with anyio.move_on_after(0.3):
                await self.extra.wait()
        finally:
            self.in_flight -= 1
        return token_json("tok", 3600)


@pytest.mark.parametrize(("pool", "expected"), [(1, 1), (2, 2), (None, 10)])
async def test_token_requests_share_a_pool_of_token_pool_size_connections(
    endpoint: WebEndpoint, pool: int | None, expected: int
) -> None:
    """One provider more than the pool fetches at once: the endpoint sees at most the pool."""
    endpoint.handler = gate = Gate(expected)
    manager = TokenManager() if pool is None else TokenManager(token_pool_size=pool)
    with anyio.fail_after(20):  # the default pool: 10
        async with manager as tokens:
            holders = [
                tokens.add(make_provider(endpoint.base, name=f"p{n}")) for n in range(expected + 1)
            ]
            for holder in holders:
                await holder.get()
    assert expected == gate.peak


@pytest.mark.parametrize(
    ("networks", "expected"),
    [
        ((Network(read_timeout=5), Network(read_timeout=5)), 1),  # equal: one session
        ((None, Network()), 1),  # equal to the manager's: its session
        ((Network(read_timeout=5), Network(read_timeout=6)), 2),  # a session each
    ],
    ids=["equal", "the-managers", "different"],
)
async def test_providers_given_equal_networks_share_a_token_session(
    endpoint: WebEndpoint, networks: tuple[Network | None, Network | None], expected: int
) -> None:
    endpoint.handler = gate = Gate(expected)
    with anyio.fail_after(20):
        async with TokenManager(token_pool_size=1) as tokens:
            holders = [
                tokens.add(make_provider(endpoint.base, name=f"p{n}"), network=network)
                for n, network in enumerate(networks)
            ]
            for holder in holders:
                await holder.get()
    assert expected == gate.peak


async def test_a_providers_own_network_bounds_its_token_requests(
    endpoint: WebEndpoint, silent: Silent
) -> None:
    async with TokenManager() as tokens:  # no read bound; a 10 s fetch timeout
        holder = tokens.add(make_provider(endpoint.base), network=Network(read_timeout=0.2))
        await eventually(lambda: holder.health().failures >= 1, within=5)
    assert {"timeout"} == set(holder.health().failures_by_kind)


async def test_a_seeded_rng_gives_the_same_jitter_every_run(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    endpoint.handler = lambda _: _token_answer()
    delays: list[float] = []
    for _ in range(2):
        clock = ManualClock()  # standing still: the delay is the jitter alone
        async with TokenManager(clock=clock, rng=random.Random(7)) as tokens:
            await tokens.add(make_provider(endpoint.base)).get()
            await eventually(lambda: len(fetched(records)) == len(delays) + 1)
        delays.append(fetched(records)[-1]["refresh_in"])
    assert delays[0] == delays[1]


def fetched(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [
        r.aiopay_auth  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "aiopay_auth", {}).get("event") == "aiopay_auth.token_fetched"
    ]


async def test_a_token_request_is_cut_at_the_policys_fetch_timeout(
    endpoint: WebEndpoint, silent: Silent
) -> None:
    policy = RefreshPolicy(fetch_timeout=0.2, backoff_initial=0.01, backoff_max=0.01)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        # The default bound is 10 s; the policy's 0.2 s cuts it long before.
        await eventually(lambda: holder.health().failures >= 1, within=5)
    assert {"timeout"} == set(holder.health().failures_by_kind)


async def test_get_waits_at_most_the_timeout_given(endpoint: WebEndpoint, silent: Silent) -> None:
    async with TokenManager() as tokens:  # a 30 s wait bound
        holder = tokens.add(make_provider(endpoint.base))
        with anyio.fail_after(10), pytest.raises(TokenUnavailableError, match="wait bound"):
            await holder.get(timeout=0.1)


# --------------------------------------------------------------------------- closing


async def test_closing_closes_every_session_and_is_logged(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    endpoint.handler = lambda _: _token_answer()
    async with TokenManager() as tokens:
        tokens.add(make_provider(endpoint.base, name="first"))
        tokens.add(make_provider(endpoint.base, name="second"))
        sessions = [tokens.session(), tokens.session()]
    added = [
        (r.levelno, getattr(r, "aiopay_auth", {}))
        for r in records
        if getattr(r, "aiopay_auth", {}).get("event") == "aiopay_auth.provider_added"
    ]
    assert [
        (logging.DEBUG, {"event": "aiopay_auth.provider_added", "provider": name})
        for name in ("first", "second")
    ] == added
    assert all(session.closed for session in sessions)  # every session it made
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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"policy": {}}, "TokenManager policy must be a RefreshPolicy, not a dict"),
        ({"rng": 7}, "TokenManager rng must be a Random, not a int"),
        ({"clock": 1.0}, "TokenManager clock must be callable, not a float"),
        ({"token_source": "x"}, "TokenManager token_source must be callable, not a str"),
        ({"token_pool_size": -1}, "TokenManager token_pool_size must be at least 0, not -1"),
    ],
)
def test_bad_manager_options_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenManager(**options)
    assert message == caught.value.message


async def test_adding_while_the_manager_is_being_entered_is_refused(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    manager = TokenManager()
    entering = asyncio.create_task(manager.__aenter__())
    await asyncio.sleep(0)  # it runs up to its wait for the refreshers' task group
    with pytest.raises(ConfigError) as caught:
        manager.add(provider_for(fake))
    assert "add providers inside 'async with TokenManager()'" == caught.value.message
    await entering
    await manager.aclose()


async def test_the_token_source_hook_gets_the_holder_and_the_holder_the_policy(
    endpoint: WebEndpoint,
) -> None:
    endpoint.handler = lambda _: _token_answer()
    given: list[object] = []

    def hook(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        given.append(holder)
        return inner

    policy = RefreshPolicy(backoff_initial=10.0, backoff_max=20.0)
    async with TokenManager(policy=policy, token_source=hook) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        assert [holder] == given
        first = await holder.get()
        assert holder.invalidate(first)
        await holder.get()
        # The refusal backoff is the manager's policy's (5-10 s), not the
        # default's (0.25-0.5 s).
        assert holder.refusal_backoff() > 1.0


@pytest.mark.parametrize(
    ("network", "kwargs", "clash"),
    [
        (Network(proxy="http://127.0.0.1:3128"), {"proxy_auth": ("u", "p")}, "proxy_auth"),
        (Network(read_timeout=1.0), {"timeout": aiohttp.ClientTimeout(total=5)}, "timeout"),
        (
            Network(proxy="http://127.0.0.1:3128", trust_env=True),
            {"proxy": "http://127.0.0.1:3129", "trust_env": False},
            "proxy, trust_env",
        ),
    ],
)
async def test_a_session_option_given_twice_is_named(
    network: Network, kwargs: dict[str, Any], clash: str
) -> None:
    async with TokenManager() as tokens:
        with pytest.raises(ConfigError) as caught:
            tokens.session(network=network, **kwargs)
    assert f"session(): pass {clash} through network=, not as well" == caught.value.message


async def test_a_session_timeout_with_a_network_without_bounds_is_kept() -> None:
    async with TokenManager() as tokens:
        http = tokens.session(network=Network(), timeout=aiohttp.ClientTimeout(total=5))
        assert 5 == http.timeout.total


async def test_a_session_on_a_network_with_bounds_keeps_aiohttps_total() -> None:
    async with aiohttp.ClientSession() as plain, TokenManager() as tokens:
        http = tokens.session(network=Network(read_timeout=1.0))
        assert plain.timeout.total is not None  # aiohttp's default: 5 minutes
        assert plain.timeout.total == http.timeout.total
        assert 1.0 == http.timeout.sock_read


async def test_misuse_before_entering_says_what_was_wrong(
    fake_provider: FakeProviderFactory,
) -> None:
    profile = provider_for(await fake_provider("cm"))
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
    with pytest.raises(ConfigError) as caught:
        TokenManager().middleware()
    assert "use middleware() inside 'async with TokenManager()'" == caught.value.message
    never_entered = TokenManager()
    await never_entered.aclose()  # closing one never entered is fine, and final
    with pytest.raises(ConfigError, match=r"^cannot use session"):
        never_entered.session()


async def test_misuse_inside_and_after_say_what_was_wrong(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    profile = provider_for(fake)
    async with TokenManager() as tokens, TokenManager() as other:
        with pytest.raises(ConfigError) as caught:
            await tokens.__aenter__()
        assert "a TokenManager can be entered only once" == caught.value.message
        with pytest.raises(ConfigError) as caught:
            tokens.add("cm")  # type: ignore[arg-type]
        assert "add() provider must be a Provider, not a str" == caught.value.message
        with pytest.raises(ConfigError) as caught:
            tokens.add(profile, network="http://proxy")  # type: ignore[arg-type]
        assert ("network must be an aiopay_auth.Network, not str", "cm") == (
            caught.value.message,
            caught.value.provider,
        )
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
        with (
            pytest.raises(ConfigError) as caught,
            pytest.warns(DeprecationWarning, match="deprecated"),
        ):
            await other.token(holder)
        assert "provider 'cm' was not added to this manager" == caught.value.message
        with pytest.raises(
            ConfigError, match=r"^a holder must be a TokenHolder or Tenants, not a str$"
        ):
            tokens.middleware("cm")  # type: ignore[arg-type]
        for kwarg in ("connector", "middlewares"):
            with pytest.raises(ConfigError) as caught:
                tokens.session(holder, **{kwarg: None})  # type: ignore[arg-type]
            assert "session() builds its own connector and middlewares" == caught.value.message
        with pytest.raises(ConfigError) as caught:
            tokens.session(holder, timeout=5)
        assert "session() timeout must be a ClientTimeout, not a int" == caught.value.message
        with pytest.raises(ConfigError, match=r"^session\(\) limit must be at least 1, not 0$"):
            tokens.session(holder, limit=0)
        with pytest.raises(
            ConfigError, match=r"^session\(\) limit_per_host must be at least 0, not -1$"
        ):
            tokens.session(holder, limit_per_host=-1)
    with pytest.raises(ConfigError) as caught:
        tokens.middleware()
    assert "cannot use middleware(): this TokenManager is closed" == caught.value.message
    with pytest.raises(ConfigError) as caught:
        tokens.add(provider_for(fake, name="late"))
    assert ("cannot add providers: this TokenManager is closed", "late") == (
        caught.value.message,
        caught.value.provider,
    )


# --------------------------------------------------------------------------- tenant sets


async def test_add_tenants_misuse_errors_say_what_was_wrong(endpoint: WebEndpoint) -> None:
    api = f"{endpoint.base}/api"
    with pytest.raises(ConfigError) as caught:
        TokenManager().add_tenants("cm", api=api)
    assert ("add tenants inside 'async with TokenManager()'", "cm") == (
        caught.value.message,
        caught.value.provider,
    )
    async with TokenManager() as tokens, TokenManager() as other:
        for name, message in [
            (7, "add_tenants() name must be a str, not a int"),
            ("", "add_tenants() name must not be empty"),
        ]:
            with pytest.raises(ConfigError) as caught:
                tokens.add_tenants(name, api=api)  # type: ignore[arg-type]
            assert message == caught.value.message
        with pytest.raises(ConfigError) as caught:
            tokens.add_tenants("cm", api=api, network="http://proxy")  # type: ignore[arg-type]
        assert ("network must be an aiopay_auth.Network, not str", "cm") == (
            caught.value.message,
            caught.value.provider,
        )
        merchants = tokens.add_tenants("cm", api=api)
        with pytest.raises(ConfigError) as caught:
            other.middleware(merchants)
        assert ("tenants 'cm' were not added to this manager", "cm") == (
            caught.value.message,
            caught.value.provider,
        )
    with pytest.raises(ConfigError) as caught:
        tokens.add_tenants("late", api=api)
    assert ("cannot add tenants: this TokenManager is closed", "late") == (
        caught.value.message,
        caught.value.provider,
    )
    with pytest.raises(ConfigError) as caught:
        merchants.add("m-1", make_provider(endpoint.base))
    assert ("cannot add tenants: this TokenManager is closed", "cm/m-1") == (
        caught.value.message,
        caught.value.provider,
    )


async def test_a_tenant_set_is_logged_and_its_network_bounds_its_token_requests(
    endpoint: WebEndpoint, silent: Silent, records: list[logging.LogRecord]
) -> None:
    async with TokenManager() as tokens:  # no read bound; a 10 s fetch timeout
        merchants = tokens.add_tenants(
            "cm", api=f"{endpoint.base}/api", network=Network(read_timeout=0.2)
        )
        holder = merchants.add("m-1", make_provider(endpoint.base)).holder
        await eventually(lambda: holder.health().failures >= 1, within=5)
    assert {"timeout"} == set(holder.health().failures_by_kind)
    added = [
        (r.levelno, getattr(r, "aiopay_auth", {}))
        for r in records
        if getattr(r, "aiopay_auth", {}).get("event") == "aiopay_auth.tenants_added"
    ]
    assert [(logging.DEBUG, {"event": "aiopay_auth.tenants_added", "provider": "cm"})] == added


async def test_a_seeded_rng_gives_tenants_the_same_jitter_every_run(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    endpoint.handler = lambda _: _token_answer()
    delays: list[float] = []
    for _ in range(2):
        clock = ManualClock()  # standing still: the delay is the jitter alone
        async with TokenManager(clock=clock, rng=random.Random(7)) as tokens:
            merchants = tokens.add_tenants("cm", api=f"{endpoint.base}/api")
            await merchants.add("m-1", make_provider(endpoint.base)).holder.get()
            await eventually(lambda: len(fetched(records)) == len(delays) + 1)
        delays.append(fetched(records)[-1]["refresh_in"])
    assert delays[0] == delays[1]
