"""The middleware sends the token to its provider's API and nowhere else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from yarl import URL

from aiopay_auth import (
    BearerAuth,
    ConfigError,
    FairPool,
    RefreshPolicy,
    TokenHolder,
    TokenManager,
    TokenUnavailableError,
)
from aiopay_auth._pool import gates_for
from aiopay_auth.providers import generic
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
    assert 1 == holder.health().recoveries
    # The fresh token was refused too: within its backoff, noted as refused.
    assert holder.refusing is not None
    assert (1, True) == (holder.refusing.tokens, holder.refusing.refused)


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
    assert 0 == holder.health().invalidations  # refused once, not retried: it was never ours


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
        with pytest.raises(ConfigError) as twice:
            tokens.middleware(back, back)
        url, name = back.provider.api[0], back.name
        assert (
            f"[{name}] providers {name!r} and {name!r} both claim {url}; "
            "a URL can carry only one provider's token"
        ) == str(twice.value)
        assert name == twice.value.provider
        with pytest.raises(ConfigError, match="at least one"):
            BearerAuth()


def test_bearer_auth_misuse_errors_name_what_was_wrong() -> None:
    with pytest.raises(ConfigError) as empty:
        BearerAuth()
    assert "BearerAuth needs at least one token holder" == str(empty.value)
    with pytest.raises(ConfigError) as wrong:
        BearerAuth("not a holder")  # type: ignore[arg-type]
    assert str(wrong.value).startswith("BearerAuth holders must be a TokenHolder, not a ")


def test_an_api_prefix_is_matched_as_written() -> None:
    # Only the trailing "/" of an API's path is dropped: "/apiX" is not "/api".
    holder = TokenHolder(
        generic.provider(
            name="x",
            token_url="https://auth.example/token",
            api="https://pay.example/apiX/",
            client_id="id",
            client_secret="secret",
        )
    )
    auth = BearerAuth(holder)
    base = URL("https://pay.example")
    assert holder is auth.holder_for(base / "apiX" / "orders")
    assert holder is auth.holder_for(base / "apiX")
    assert auth.holder_for(base / "api" / "orders") is None
    assert auth.holder_for(base / "api") is None


async def test_a_token_is_not_sent_at_its_exact_expiry_instant() -> None:
    # An injected clock stands at the token's expires_at: the token is no
    # longer usable, so the request waits for a new one (here, in vain: the
    # refresher sleeps until its refresh point) and is never sent with it.
    now = [1000.0]
    policy = RefreshPolicy(wait_timeout=0.2)
    async with serving() as (api,), TokenManager(policy=policy, clock=lambda: now[0]) as tokens:
        holder = tokens.add(api.provider())
        first = await holder.get()
        async with tokens.session(holder) as http:
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
            now[0] = first.expires_at
            with pytest.raises(TokenUnavailableError):
                await http.get(api.api / "pay")
            now[0] = first.expires_at - 0.001
            async with http.get(api.api / "pay") as resp:
                assert 200 == resp.status
    assert [first.header] * 2 == [r.authorization for r in api.api_requests()]


async def test_a_middleware_after_ours_may_remove_the_header() -> None:
    async def anonymous(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        request.headers.popall("Authorization", None)
        return await handler(request)

    async with serving() as (api,), TokenManager() as tokens:
        holder = tokens.add(api.provider())
        api.redirects["/api/redirect"] = (302, "/open/echo")
        async with (
            aiohttp.ClientSession(middlewares=[tokens.middleware(holder), anonymous]) as http,
            http.get(api.api / "redirect") as resp,
        ):
            assert {"authorization": None} == await resp.json()
    assert [("/api/redirect", None), ("/open/echo", None)] == [
        (r.path, r.authorization) for r in api.received if r.path != "/oauth/token"
    ]


async def test_a_401_during_the_backoff_is_noted_against_the_token() -> None:
    # A standing clock: the new token stays inside its backoff for the whole test.
    now = [1000.0]

    async def unreplayable() -> AsyncIterator[bytes]:
        yield b"amount=1"

    async with serving() as (api,), TokenManager(clock=lambda: now[0]) as tokens:
        holder = tokens.add(api.provider())
        await holder.get()
        api.refuse_all = True
        async with tokens.session(holder) as http:
            async with http.post(api.api / "pay", data=unreplayable()) as resp:
                assert 401 == resp.status  # invalidated; not resent
            second = await holder.get()
            assert holder.backing_off()
            assert holder.refusing is not None
            assert (1, False) == (holder.refusing.tokens, holder.refusing.refused)
            async with http.get(api.api / "pay") as resp:
                assert 401 == resp.status  # handed back as it is: no resend, no new token
            assert holder.current is second
            assert (1, True) == (holder.refusing.tokens, holder.refusing.refused)
    assert 2 == api.token_calls
