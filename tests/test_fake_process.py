"""Fake providers in a child process (``aiopay_auth.testing.FakeProviderProcess``)."""

from __future__ import annotations

import functools
import os

import pytest

from aiopay_auth import TokenManager
from aiopay_auth.testing import (
    ClientCounters,
    FakeEndpoint,
    FakeProvider,
    FakeProviderProcess,
    ServerCounters,
    provider_for,
)


pytestmark = pytest.mark.anyio


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    return "asyncio"


SERVERS = {
    "cm": functools.partial(FakeProvider, "cm", lifetime=60.0),
    "storefront": functools.partial(FakeProvider, "oro", lifetime=60.0),
}


async def test_the_child_sends_endpoints_the_parent_plans_and_counts() -> None:
    async with FakeProviderProcess(SERVERS) as fakes:
        assert fakes.pid != os.getpid()
        cm, oro = fakes.endpoints["cm"], fakes.endpoints["storefront"]
        assert ("cm", "cm", None) == (cm.name, cm.dialect, cm.storefront_api_base)
        assert "storefront" == oro.name
        assert oro.storefront_api_base is not None
        assert oro.client_secret not in repr(oro)
        assert cm.password not in repr(cm)
        assert {"cm": ServerCounters(), "storefront": ServerCounters()} == (
            await fakes.counters_async()
        )
        async with TokenManager() as tokens:
            holders = [
                tokens.add(provider_for(cm)),
                tokens.add(provider_for(oro, application="storefront", name="oro-storefront")),
            ]
            async with (
                tokens.session(*holders) as http,
                http.get(cm.api_base / "payments") as response,
            ):
                assert 200 == response.status
        counters = await fakes.counters_async()
    assert ServerCounters(token_calls=1, tokens_issued=1, api_calls=1) == counters["cm"]
    assert 1 == counters["storefront"].tokens_issued
    assert ServerCounters(token_calls=1, tokens_issued=1) == counters["cm"] - ServerCounters(
        api_calls=1
    )


def test_blocking_use_and_a_second_start_is_refused() -> None:
    fakes = FakeProviderProcess({"cm": SERVERS["cm"]})
    with fakes:
        assert isinstance(fakes.endpoints["cm"], FakeEndpoint)
        assert {"cm": ServerCounters()} == fakes.counters()
    with pytest.raises(RuntimeError, match="only once"), fakes:
        pass


async def test_endpoint_of_a_fake_in_this_process() -> None:
    async with FakeProvider("payme") as fake:
        endpoint = FakeEndpoint.of(fake)
        assert provider_for(endpoint) == provider_for(fake)


async def test_a_child_serves_many_merchants_and_counts_each() -> None:
    merchants = [(f"m-{i}", f"secret-{i}") for i in range(3)]
    servers = {"cm": functools.partial(FakeProvider, "cm", lifetime=60.0, clients=merchants)}
    async with FakeProviderProcess(servers) as fakes:
        endpoint = fakes.endpoints["cm"]
        assert ClientCounters() == (await fakes.client_counters_async())["cm"]
        async with TokenManager() as tokens:
            shop = tokens.add_tenants("cm", api=endpoint.api_base)
            tenants = [
                shop.add(key, provider_for(endpoint, client_id=key, client_secret=secret))
                for key, secret in merchants
            ]
            async with tokens.session(shop) as http:
                for n, tenant in enumerate(tenants):
                    for _ in range(n + 1):
                        url = endpoint.api_base / "payments"
                        async with http.get(url, middlewares=tenant.middlewares) as response:
                            assert 200 == response.status
        counters = (await fakes.client_counters_async())["cm"]
    assert {"m-0": 1, "m-1": 2, "m-2": 3} == counters.api_calls_by_client
    assert {"m-0": 1, "m-1": 1, "m-2": 1} == counters.token_calls_by_client
    assert 1 <= counters.max_token_calls_in_flight <= 3


def test_client_counters_blocking() -> None:
    servers = {"cm": functools.partial(FakeProvider, "cm", clients=[("m-1", "s")])}
    with FakeProviderProcess(servers) as fakes:
        assert {"cm": ClientCounters()} == fakes.client_counters()
