"""Routing in one middleware that serves a shared API (Tenants) and a provider side by side.

``_routes.Routes`` decides every hop of both clients; ``test_tenants.py``
checks the shared API on its own. Here a :class:`Tenants` set and a
provider whose API lies inside the set's share one :class:`BearerAuth`,
against the real loopback server of ``tenant_endpoint.py``.
"""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from aiopay_auth import ConfigError, Provider, TenantRequiredError, TokenManager
from aiopay_auth.providers import generic

from .tenant_endpoint import TenantApi, tenant_api


pytestmark = pytest.mark.anyio


def ops_provider(server: TenantApi, name: str, api: str | URL) -> Provider:
    """A provider of its own on *server*'s token endpoint, claiming *api*."""
    client_id, secret = server.client(f"{name}-client")
    return generic.provider(
        name=name,
        token_url=server.base_url / "oauth" / "token",
        api=api,
        client_id=client_id,
        client_secret=secret,
    )


async def test_a_shared_api_and_a_provider_inside_it_share_one_middleware() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        tenant = merchants.add(key, server.provider(key, secret))
        ops = tokens.add(ops_provider(server, "ops", server.api / "ops"))
        auth = tokens.middleware(merchants, ops)
        # The shared API is routed, but it is no holder: holders and holder_for name providers only.
        assert (ops,) == auth.holders
        assert auth.holder_for(server.api / "charges") is None
        assert auth.holder_for(server.api) is None
        assert ops is auth.holder_for(server.api / "ops" / "x")
        async with aiohttp.ClientSession(middlewares=[auth]) as http:
            with pytest.raises(TenantRequiredError):
                await http.get(server.api / "charges")
            async with http.get(server.api / "ops" / "x") as resp:
                assert {"client": "ops-client"} == await resp.json()  # the longer prefix wins
            async with http.get(server.api / "charges", middlewares=tenant.middlewares) as resp:
                assert {"client": key} == await resp.json()
    assert ["/api/ops/x", "/api/charges"] == [c.path for c in server.api_calls]


async def test_a_shared_api_and_a_provider_cannot_claim_one_url() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        dup = tokens.add(ops_provider(server, "dup", f"{server.api}/"))
        # The message names the provider that claimed first, then the one refused and its URL.
        cases = (
            ((merchants, dup), f"providers 'acme' and 'dup' both claim {server.api}/", "dup"),
            ((dup, merchants), f"providers 'dup' and 'acme' both claim {server.api}", "acme"),
        )
        for holders, conflict, refused in cases:
            with pytest.raises(ConfigError) as caught:
                tokens.middleware(*holders)
            assert f"[{refused}] {conflict}; a URL can carry only one provider's token" == str(
                caught.value
            )
            assert refused == caught.value.provider
