"""The middleware sends the token to its provider's API and nowhere else."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from aiopay_auth import BearerAuth, ConfigError, FairPool, TokenManager
from aiopay_auth.testing import provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory


pytestmark = pytest.mark.anyio


async def test_redirect_to_another_origin_never_carries_the_token(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("rfc6749", lifetime=60)
    other = await fake_provider("rfc6749")
    targets = [
        other.base_url / "echo-headers",  # another port
        URL(f"http://localhost:{other.port}/echo-headers"),  # another host name
    ]
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake, api=[fake.base_url]))
        async with tokens.session(holder) as http:
            for target in targets:
                url = (fake.base_url / "redirect").with_query(to=str(target))
                async with http.get(url) as resp:
                    assert 200 == resp.status
                    assert resp.url == target
                    echoed = await resp.json()
                    assert resp.history[0].status == 302
                assert "authorization" not in {k.lower() for k in echoed}
        token = holder.current
        assert token is not None
    assert 0 == other.api_calls


async def test_redirect_within_the_origin_out_of_the_api_drops_the_token(
    fake_provider: FakeProviderFactory,
) -> None:
    # aiohttp keeps Authorization on a same-origin redirect; the middleware
    # must strip it when the new path is outside the provider's API.
    fake = await fake_provider("rfc6749", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake, api=[fake.base_url / "redirect"]))
        async with tokens.session(holder) as http:
            url = (fake.base_url / "redirect").with_query(to="/echo-headers")
            async with http.get(url) as resp:
                assert 200 == resp.status
                echoed = await resp.json()
        assert holder.current is not None
    assert "authorization" not in {k.lower() for k in echoed}


async def test_out_of_scope_requests_are_not_stamped(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder) as http:
            # Same origin, outside /api/v1: no token.
            async with http.get(fake.base_url / "echo-headers") as resp:
                echoed = await resp.json()
            assert "authorization" not in {k.lower() for k in echoed}
            # A user's own Authorization for another API is left alone.
            async with http.get(
                fake.base_url / "echo-headers", headers={"Authorization": "Basic abc"}
            ) as resp:
                echoed = await resp.json()
            assert "Basic abc" == {k.lower(): v for k, v in echoed.items()}["authorization"]


async def test_second_401_is_returned_not_retried_forever(
    fake_provider: FakeProviderFactory,
) -> None:
    # A storefront token aimed at the back-office API: Oro refuses every one.
    fake = await fake_provider("oro", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(
            provider_for(fake, application="storefront", storefront_path="/admin/api")
        )
        async with tokens.session(holder) as http, http.get(fake.api_base / "orders") as resp:
            assert 401 == resp.status
    assert 2 == fake.api_calls  # the request and exactly one resend
    assert 2 == fake.token_calls
    assert 1 == holder.stats.recoveries


async def test_own_session_with_fair_pool(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=3),
            middlewares=[FairPool(), tokens.middleware(holder)],
        ) as http:
            for _ in range(10):
                async with http.post(fake.api_base / "pay", json={"amount": 1}) as resp:
                    assert 200 == resp.status
    assert 10 == fake.api_calls
    assert 1 == fake.token_calls


async def test_no_token_on_a_downgrade_to_plain_http(fake_provider: FakeProviderFactory) -> None:
    # The API is declared https; the same host and port over plain http is
    # another origin and never gets the token.
    fake = await fake_provider("cm", lifetime=60)
    https_api = fake.api_base.with_scheme("https")
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake, api=https_api))
        await holder.get()
        async with tokens.session(holder) as http, http.get(fake.api_base / "pay") as resp:
            assert 401 == resp.status
    assert fake.last_api_authorization is None
    assert 1 == fake.api_calls  # refused once, not retried: it was never ours


async def test_one_middleware_routes_each_url_to_its_provider(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("oro", lifetime=60)
    async with TokenManager() as tokens:
        back = tokens.add(provider_for(fake))
        front = tokens.add(provider_for(fake, application="storefront"))
        # A third provider claiming the whole origin: the longer prefixes win.
        root = tokens.add(
            provider_for(fake, name="oro-root", application="storefront", storefront_path="/")
        )
        auth = tokens.middleware(back, front, root)
        assert (back, front, root) == auth.holders
        assert back is auth.holder_for(fake.base_url / "admin" / "api" / "orders")
        assert front is auth.holder_for(fake.base_url / "api" / "orders")
        assert root is auth.holder_for(fake.base_url / "apix")
        assert auth.holder_for(fake.base_url.with_port(1) / "api") is None
        with pytest.raises(ConfigError, match="both claim"):
            tokens.middleware(back, back)
        with pytest.raises(ConfigError, match="at least one"):
            BearerAuth()
