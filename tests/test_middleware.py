"""The middleware sends the token to its provider's API and nowhere else."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from aiopay_auth import BearerAuth, ConfigError, FairPool, TokenManager
from aiopay_auth._pool import gates_for
from aiopay_auth.testing import provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .helpers import eventually
from .hostile import serving


pytestmark = pytest.mark.anyio


async def test_redirect_to_another_origin_never_carries_the_token() -> None:
    async with serving(2) as (api, other), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        targets = [
            other.base_url / "open" / "echo",  # another port
            URL(f"http://localhost:{other.port}/open/echo"),  # another host name
        ]
        async with tokens.session(holder) as http:
            for n, target in enumerate(targets):
                api.redirects[f"/api/redirect/{n}"] = (302, str(target))
                async with http.get(api.api / "redirect" / str(n)) as resp:
                    assert 200 == resp.status
                    assert resp.url == target
                    assert [302] == [r.status for r in resp.history]
                    assert {"authorization": None} == await resp.json()
            token = holder.current
        assert token is not None
    # The in-scope first hop carried the current token...
    assert [token.header] * 2 == [r.authorization for r in api.api_requests()]
    # ...and the other origin saw both hops arrive without any.
    assert [("/open/echo", None)] * 2 == [(r.path, r.authorization) for r in other.received]


async def test_redirect_within_the_origin_out_of_the_api_drops_the_token() -> None:
    # aiohttp keeps a caller's Authorization on a same-origin redirect; the
    # middleware stamps nothing outside the provider's API.
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.redirects["/api/redirect"] = (307, "/open/echo")
        async with tokens.session(holder) as http:
            async with http.get(api.api / "redirect") as resp:
                assert 200 == resp.status
                assert {"authorization": None} == await resp.json()
            token = holder.current
        assert token is not None
    hops = [(r.path, r.authorization) for r in api.received if r.path != "/oauth/token"]
    assert [("/api/redirect", token.header), ("/open/echo", None)] == hops


async def test_out_of_scope_requests_are_not_stamped() -> None:
    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        async with tokens.session(holder) as http:
            # In scope: stamped with the current token.
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
            # Same origin, outside /api: no token.
            async with http.get(api.base_url / "open" / "echo") as resp:
                assert {"authorization": None} == await resp.json()
            # A path that only starts like the API's: outside it too.
            async with http.get(api.base_url / "apix" / "echo") as resp:
                assert 404 == resp.status
            # A user's own Authorization for another API is left alone.
            async with http.get(
                api.base_url / "open" / "echo", headers={"Authorization": "Basic abc"}
            ) as resp:
                assert {"authorization": "Basic abc"} == await resp.json()
            token = holder.current
        assert token is not None
    assert [token.header] == [r.authorization for r in api.api_requests()]
    assert [None, "Basic abc"] == [r.authorization for r in api.received if r.path == "/open/echo"]


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


async def test_own_session_with_fair_pool() -> None:
    # 10 concurrent requests through a pool of 3: the gate admits them in
    # arrival order, 3 at a time, and stamps each only once admitted, so
    # the 7 that queue carry the token published while they waited.
    hold = asyncio.Event()
    async with serving(hold=hold) as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        first = await holder.get()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=3),
            middlewares=[FairPool(), tokens.middleware(holder)],
        ) as http:

            async def pay(n: int) -> int:
                async with http.post(api.api / "pay", params={"n": str(n)}, json={"n": n}) as r:
                    return r.status

            tasks = [asyncio.create_task(pay(n)) for n in range(10)]
            await eventually(lambda: api.in_flight == 3)
            assert http.connector is not None
            gates = gates_for(http.connector)
            assert gates is not None
            assert gates.pool is not None
            assert (3, 7) == (gates.pool.inside, gates.pool.waiting)
            # A refresh lands while 7 requests queue.
            holder.invalidate(first)
            second = await holder.get()
            hold.set()
            assert [200] * 10 == await asyncio.gather(*tasks)
    assert 3 == api.max_in_flight
    assert [str(n) for n in range(10)] == api.arrivals  # first come, first served
    sent = [r.authorization for r in api.api_requests()]
    assert [first.header] * 3 + [second.header] * 7 == sent


async def test_no_token_on_a_downgrade_to_plain_http() -> None:
    # The API is declared https, plus one plain-http path on loopback; the
    # same host and port over plain http elsewhere is another origin and
    # never gets the token.
    async with serving() as (api,), TokenManager() as tokens:
        https_api = api.api.with_scheme("https")
        holder = tokens.add(api.provider(api=[https_api, api.api / "plain"]))
        token = await holder.get()
        async with tokens.session(holder) as http:
            async with http.get(api.api / "plain" / "pay") as resp:
                assert 200 == resp.status
            async with http.get(api.api / "pay") as resp:
                assert 401 == resp.status
    assert [token.header, None] == [r.authorization for r in api.api_requests()]
    assert 0 == holder.stats.invalidations  # refused once, not retried: it was never ours


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
        assert front is auth.holder_for(fake.base_url / "api")  # exactly the API base
        assert root is auth.holder_for(fake.base_url / "apix")
        assert auth.holder_for(fake.base_url.with_port(1) / "api") is None
        with pytest.raises(ConfigError, match="both claim"):
            tokens.middleware(back, back)
        with pytest.raises(ConfigError, match="at least one"):
            BearerAuth()


def test_bearer_auth_misuse_errors_name_what_was_wrong() -> None:
    with pytest.raises(ConfigError) as empty:
        BearerAuth()
    assert "BearerAuth needs at least one token holder" == str(empty.value)
    with pytest.raises(ConfigError) as wrong:
        BearerAuth("not a holder")  # type: ignore[arg-type]
    assert str(wrong.value).startswith("BearerAuth holders must be a TokenHolder, not a ")
