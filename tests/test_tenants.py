"""Tenants: many credentials for one API, one pool, each request choosing its own.

Every promise is checked against ``tests/tenant_endpoint.py``, a server
written from RFC 6749 and RFC 6750 that knows which client each token was
issued to, not against our own ``FakeProvider``.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Callable

import aiohttp
import anyio
import pytest

from aiopay_auth import (
    ClientTenantRemovedError,
    ConfigError,
    RefreshPolicy,
    TenantRemovedError,
    TenantRequiredError,
    TokenHolder,
    TokenManager,
    TokenUnavailableError,
)
from aiopay_auth.providers import generic

from .helpers import eventually
from .tenant_endpoint import tenant_api


pytestmark = pytest.mark.anyio


def holders_alive(name: str) -> int:
    """How many TokenHolder objects named *name* are still alive."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, TokenHolder) and o.name == name)


def refreshers() -> set[str]:
    """Names of the SDK's live refresher tasks and token requests."""
    return {
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and t.get_name().startswith(("aiopay_auth refresher", "aiopay_auth fetch"))
    }


async def test_each_request_carries_its_own_tenants_token() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
        keys = [server.client()[0] for _ in range(20)]
        for key in keys:
            merchants.add(key, server.provider(key, next(iter(server.clients[key]))))
        async with tokens.session(merchants, limit=8) as http:

            async def charge(key: str) -> object:
                url = server.api / "merchants" / key / "charges"
                async with http.post(url, json={}, middlewares=merchants[key].middlewares) as r:
                    assert 200 == r.status, await r.text()
                    return (await r.json())["client"]

            # Five charges per merchant, all at once, interleaved on one pool.
            clients = await asyncio.gather(*(charge(k) for _ in range(5) for k in keys))
    assert keys * 5 == clients
    # One token per merchant, each asked with that merchant's own credentials.
    assert sorted(keys) == sorted(c.client_id for c in server.token_calls)
    assert all(c.accepted for c in server.token_calls)


async def test_a_request_that_chose_no_tenant_fails_before_it_is_sent() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        async with tokens.session(merchants) as http:
            with pytest.raises(TenantRequiredError) as caught:
                await http.get((server.api / "merchants" / key / "charges").with_query(amount=1))
            async with http.get(server.base_url / "open" / "echo") as resp:
                assert {"authorization": None} == await resp.json()  # outside: sent, no token
    assert [] == server.api_calls
    err = caught.value
    assert isinstance(err, ConfigError)
    assert not err.retryable
    assert "acme" == err.provider
    assert "chose no tenant" in str(err) and "middlewares=tenant.middlewares" in str(err)
    assert "amount" not in str(err)  # the query is not quoted


async def test_a_tenants_token_goes_only_to_its_api() -> None:
    async with tenant_api() as server, tenant_api() as elsewhere, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        tenant = merchants.add(key, server.provider(key, secret))
        async with tokens.session(merchants) as http:
            target = elsewhere.base_url / "open" / "echo"
            hop = (server.api / "pay").with_query(to=str(target))
            async with http.get(hop, middlewares=tenant.middlewares) as resp:
                assert {"authorization": None} == await resp.json()
            async with http.get(target, middlewares=tenant.middlewares) as resp:
                assert {"authorization": None} == await resp.json()
    # The first hop, on the API, carried the tenant's token; the other origin saw none.
    assert [key] == [c.client for c in server.api_calls]


async def test_a_401_recovers_the_refused_tenant_only() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        (a, sa), (b, sb) = server.client(), server.client()
        merchants.add(a, server.provider(a, sa))
        merchants.add(b, server.provider(b, sb))
        async with tokens.session(merchants) as http:
            for key in (a, b):
                async with http.get(server.api / "x", middlewares=merchants[key].middlewares) as r:
                    assert 200 == r.status
            server.revoke(a)
            async with http.get(server.api / "x", middlewares=merchants[a].middlewares) as r:
                assert 200 == r.status  # refused once, resent with a new token
            async with http.get(server.api / "x", middlewares=merchants[b].middlewares) as r:
                assert 200 == r.status
        assert 1 == merchants[a].holder.health().recoveries
        assert 0 == merchants[b].holder.health().invalidations
    assert 2 == len(server.calls_by(a))
    assert 1 == len(server.calls_by(b))


async def test_tenants_are_added_while_serving() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1000)
        async with tokens.session(merchants, limit=4) as http:
            served: list[str] = []
            for _ in range(10):
                key, secret = server.client()
                merchants.add(key, server.provider(key, secret))
                for k in merchants:
                    async with http.get(server.api, middlewares=merchants[k].middlewares) as r:
                        served.append((await r.json())["client"])
    assert 55 == len(served)
    assert 10 == len(server.token_calls)


async def test_remove_stops_the_refresher_fails_waiters_and_keeps_nothing() -> None:
    async with tenant_api(token_delay=30) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        tenant = merchants.add(key, server.provider(key, secret))
        middlewares = tenant.middlewares
        await eventually(lambda: 1 == server.in_flight)  # its first fetch, hanging
        # One task for the set, and the tenant's token request.
        assert {"aiopay_auth refresher acme", f"aiopay_auth fetch acme/{key}"} == refreshers()
        async with tokens.session(merchants) as http:
            waiters = [
                asyncio.create_task(http.get(server.api, middlewares=middlewares)) for _ in range(3)
            ]
            started = time.monotonic()
            with anyio.fail_after(5):
                await merchants.remove(key)
            results = await asyncio.gather(*waiters, return_exceptions=True)
            assert time.monotonic() - started < 5  # at once, not after wait_timeout
            assert {"aiopay_auth refresher acme"} == refreshers()  # its request stopped
            assert key not in merchants and 0 == len(merchants)
            later = asyncio.create_task(http.get(server.api, middlewares=middlewares))
            with pytest.raises(TenantRemovedError):
                await later  # and so does any later request through its middlewares
        errors = [(type(e), e.retryable, e.provider, str(e)) for e in results]  # type: ignore[union-attr]
        del tenant, middlewares, waiters, results, later
        assert 0 == holders_alive(f"acme/{key}")  # nothing of it is kept, manager still open
    message = f"[acme/{key}] tenant {key!r} was removed"
    # Through the session: the aiohttp-catchable TenantRemovedError (aiopay_auth.exceptions).
    assert [(ClientTenantRemovedError, False, f"acme/{key}", message)] * 3 == errors
    assert [] == server.api_calls


async def test_remove_fails_a_rotate_that_waits_at_once() -> None:
    async with tenant_api(token_delay=30) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        await eventually(lambda: 1 == server.in_flight)  # its first fetch, hanging
        _, new = server.client(key)
        rotation = asyncio.create_task(merchants.rotate(key, server.provider(key, new)))
        await asyncio.sleep(0)  # the rotation starts waiting
        started = time.monotonic()
        await merchants.remove(key)
        with anyio.fail_after(5), pytest.raises(TenantRemovedError, match="was removed"):
            await rotation
        assert time.monotonic() - started < 5  # at once, not after wait_timeout (30 s)


async def test_rotating_a_secret_drops_no_request() -> None:
    # 2-second tokens, refreshed every half second or so.
    async with tenant_api(lifetime=2) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, old = server.client()
        tenant = merchants.add(key, server.provider(key, old))
        statuses: list[int] = []
        stop = asyncio.Event()
        async with tokens.session(merchants) as http:

            async def worker() -> None:
                while not stop.is_set():
                    async with http.get(server.api, middlewares=tenant.middlewares) as r:
                        statuses.append(r.status)

            task = asyncio.create_task(worker())
            await eventually(lambda: len(statuses) > 10)
            _, new = server.client(key)  # the provider accepts both for a while
            token = await merchants.rotate(key, server.provider(key, new))
            assert token is tenant.holder.current
            assert new == server.token_calls[-1].secret
            server.clients[key] = {new}  # now the old secret may be revoked
            calls = len(server.token_calls)
            await eventually(lambda: len(server.token_calls) > calls + 1)  # two more refreshes
            stop.set()
            await task
    assert {200} == set(statuses)
    used = [c.secret for c in server.token_calls]
    rotated = used.index(new)
    assert ({old}, {new}) == (set(used[:rotated]), set(used[rotated:]))
    assert all(c.accepted for c in server.token_calls)


async def test_a_rotation_is_not_failed_by_the_old_secrets_refusal_still_in_flight() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, old = server.client()
        tenant = merchants.add(key, server.provider(key, old))
        first = await tenant.holder.get()
        _, new = server.client(key)
        server.clients[key] = {new}  # the old secret is revoked at the provider
        held, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            held.set()
            await release.wait()

        server.before_answer = hold
        assert tenant.holder.invalidate(first)  # a request with the old secret starts
        await held.wait()  # and is held before its answer
        rotation = asyncio.create_task(merchants.rotate(key, server.provider(key, new)))
        await asyncio.sleep(0)  # the rotation waits
        release.set()  # the old secret's invalid_client comes back
        with anyio.fail_after(5):
            token = await rotation
    assert new == server.issued_with[token.access_token]
    assert [(old, False), (new, True)] == [(c.secret, c.accepted) for c in server.token_calls[1:]]


async def test_rotating_to_a_refused_secret_says_so_and_keeps_serving() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, old = server.client()
        tenant = merchants.add(key, server.provider(key, old))
        first = await tenant.holder.get()
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError) as caught:
            await merchants.rotate(key, server.provider(key, "not-the-secret"))
        assert time.monotonic() - started < 5  # at once, not after wait_timeout
        assert first is tenant.holder.usable()  # the old token is still served
        http = tokens.session(merchants)
        async with http.get(server.api, middlewares=tenant.middlewares) as resp:
            assert 200 == resp.status
    err = caught.value
    assert err.last_error is not None
    assert (f"acme/{key}", True) == (
        err.provider,
        err.message.startswith("no token with the new credentials; last failure: "),
    )
    assert "invalid_client" in str(err)
    assert "not-the-secret" not in str(err)
    assert [True, False] == [c.accepted for c in server.token_calls]


async def test_a_rotation_with_no_answer_gives_up_at_the_wait_bound() -> None:
    policy = RefreshPolicy(wait_timeout=0.5)
    async with tenant_api() as server, TokenManager(policy=policy) as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, old = server.client()
        tenant = merchants.add(key, server.provider(key, old))
        first = await tenant.holder.get()
        _, new = server.client(key)
        never = asyncio.Event()
        server.before_answer = never.wait  # the new secret's request is never answered
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TokenUnavailableError) as caught:
            await merchants.rotate(key, server.provider(key, new))
        waited = time.monotonic() - started
        assert first is tenant.holder.usable()  # the old token is still served
        never.set()
    assert 0.5 <= waited < 5
    err = caught.value
    assert (f"acme/{key}", "no token with the new credentials", None) == (
        err.provider,
        err.message,
        err.last_error,
    )


async def test_cold_start_of_many_tenants_never_exceeds_the_cap() -> None:
    # Each token request is held 10 ms by the server, which counts them in flight.
    async with tenant_api(token_delay=0.01) as server, TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "acme", api=server.api, max_concurrent_fetches=4, fetches_per_second=10_000
        )
        for _ in range(200):
            key, secret = server.client()
            merchants.add(key, server.provider(key, secret))
        firsts = await asyncio.gather(*(merchants[k].holder.get() for k in merchants))
    assert 200 == len({t.access_token for t in firsts})
    assert 200 == len(server.token_calls)
    assert 4 == server.max_in_flight  # the cap, reached and never passed


async def test_token_requests_start_no_faster_than_the_rate() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=40)
        started = time.monotonic()
        for _ in range(21):
            key, secret = server.client()
            merchants.add(key, server.provider(key, secret))
        await asyncio.gather(*(merchants[k].holder.get() for k in merchants))
    arrived = sorted(c.arrived for c in server.token_calls)
    # The i-th request cannot reach the server before its start slot, i / 40 s in.
    assert [] == [i for i, t in enumerate(arrived) if t < started + i / 40]
    assert arrived[-1] - started >= 0.5


async def test_tenants_removed_while_waiting_for_their_start_hold_nobody_back() -> None:
    # 50 tenants are added and removed while their first token requests wait
    # for their start slots (one a second): each removal cancels a request
    # that was never sent. A tenant added after them starts at the next slot,
    # not 50 slots (50 s) later. The slot is a second off so that adding and
    # removing the 50 (about 0.1 s, more on a loaded machine) ends before it:
    # at 10 a second a loaded run reached the slot first, and gone-0's request
    # was rightly sent (3 token calls).
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=1)
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        await merchants[key].holder.get()  # the next start is 1 s off
        for i in range(50):
            merchants.add(f"gone-{i}", server.provider(key, secret))
        await eventually(lambda: merchants.limit.in_flight == merchants.limit.concurrent)
        for i in range(50):
            await merchants.remove(f"gone-{i}")
        started = time.monotonic()
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        await merchants[key].holder.get()
        waited = time.monotonic() - started
    assert 2 == len(server.token_calls)
    assert waited < 2.0, waited  # the next slot and its fetch; 50 slots would be 50 s


async def test_a_429_pauses_every_tenant_of_the_set() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api, fetches_per_second=10)
        server.throttle = 1  # the first token request gets 429, Retry-After: 1
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        await eventually(lambda: merchants.limit.throttles == 1)
        for _ in range(3):
            key, secret = server.client()
            merchants.add(key, server.provider(key, secret))
        await asyncio.gather(*(merchants[k].holder.get() for k in merchants))
        throttled, *others = server.token_calls
        assert 0 == merchants.limit.throttles  # answered since: the streak is over
    assert 4 == len(others)
    assert [] == [c for c in others if c.arrived < throttled.arrived + 1.0]
    # After the pause, still one start per 0.1 s: no burst of the queued ones
    # (0.3 s for four starts; 0.2 leaves room for arrival jitter, a burst
    # arrives within a few ms).
    arrivals = sorted(c.arrived for c in others)
    assert arrivals[-1] - arrivals[0] >= 0.2, arrivals


async def test_the_defaults_are_documented_ones() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
    assert (4, 10.0) == (merchants.limit.concurrent, merchants.limit.per_second)


async def test_misuse_is_a_config_error_naming_what_was_wrong() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        merchants.add(key, server.provider(key, secret))
        other_api = generic.provider(
            name="x",
            token_url=server.base_url / "oauth" / "token",
            api=server.base_url / "other",
            client_id=key,
            client_secret=secret,
        )
        cases: list[tuple[Callable[[], object], str]] = [
            (lambda: merchants.add(key, server.provider(key, secret)), "already have a tenant"),
            (lambda: merchants.add("", server.provider(key, secret)), "must not be empty"),
            (lambda: merchants.add("m", other_api), "is not the API of tenants 'acme'"),
            (lambda: merchants["nobody"], "have no tenant 'nobody'"),
            (lambda: tokens.add_tenants("acme", api=server.api), "already added"),
            (lambda: tokens.add_tenants("", api=server.api), "must not be empty"),
            (
                lambda: tokens.add_tenants("b", api=server.api, max_concurrent_fetches=0),
                "max_concurrent_fetches must be at least 1",
            ),
            (
                lambda: tokens.add_tenants("b", api=server.api, fetches_per_second=0),
                "fetches_per_second must be positive",
            ),
            (lambda: tokens.add_tenants("b", api=[]), "api must name at least one URL"),
            (lambda: tokens.add_tenants("b", api=""), "must be an absolute http(s) URL"),
            (lambda: tokens.add_tenants("b", api="not a url"), "must be an absolute http(s) URL"),
            (
                lambda: tokens.add_tenants("b", api="https://u:p@api.example/v1"),
                "must not carry credentials",
            ),
            (
                lambda: tokens.add_tenants("b", api="https://api.example/v1?key=k"),
                "must not have a query or fragment",
            ),
        ]
        for call, message in cases:
            with pytest.raises(ConfigError, match=re.escape(message)):
                call()
        with pytest.raises(ConfigError, match="have no tenant 'nobody'"):
            await merchants.remove("nobody")
        with pytest.raises(ConfigError, match="is not the API of tenants 'acme'"):
            await merchants.rotate(key, other_api)
        async with TokenManager() as others:
            with pytest.raises(ConfigError, match="were not added to this manager"):
                others.session(merchants)
        # A provider of its own may not claim the tenants' API in one session.
        lone = tokens.add(server.provider(key, secret, name="lone"))
        with pytest.raises(ConfigError, match="both claim"):
            tokens.session(merchants, lone)
    with pytest.raises(ConfigError, match="closed"):
        merchants.add("late", server.provider(key, secret))


async def test_closing_the_manager_fails_every_tenants_waiters() -> None:
    async with tenant_api(token_delay=30) as server:
        async with TokenManager() as tokens:
            merchants = tokens.add_tenants("acme", api=server.api)
            key, secret = server.client()
            tenant = merchants.add(key, server.provider(key, secret))
            waiter = asyncio.create_task(tenant.holder.get())
            await eventually(lambda: 1 == server.in_flight)
        with pytest.raises(TokenUnavailableError, match="closed"):
            await waiter
        assert set() == refreshers()
        assert {key: "closed"} == {k: h.state for k, h in merchants.health().items()}


async def test_a_session_of_your_own_guards_the_shared_api() -> None:
    async with tenant_api() as server, TokenManager() as tokens:
        merchants = tokens.add_tenants("acme", api=server.api)
        key, secret = server.client()
        tenant = merchants.add(key, server.provider(key, secret))
        async with aiohttp.ClientSession(middlewares=[tokens.middleware(merchants)]) as http:
            with pytest.raises(TenantRequiredError):
                await http.get(server.api)
            async with http.get(server.api, middlewares=tenant.middlewares) as resp:
                assert {"client": key} == await resp.json()
