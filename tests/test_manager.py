"""The manager's lifecycle: clean exits, surfaced failures, typed misuse errors."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from aiopay_auth import (
    ConfigError,
    RefreshPolicy,
    Secret,
    Token,
    TokenHolder,
    TokenManager,
    TokenSource,
    TokenUnavailableError,
)
from aiopay_auth.testing import Scripted, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .helpers import eventually


pytestmark = pytest.mark.anyio


def sdk_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "aiopay_auth" in (t.get_name() + repr(t.get_coro()))
    ]


async def test_exit_during_a_fetch_leaves_nothing_running(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    fake.token_delay = 30
    started = time.monotonic()
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        http = tokens.session(holder)
        await eventually(lambda: fake.token_calls == 1)
        assert sdk_tasks()
    assert time.monotonic() - started < 5
    assert [] == sdk_tasks()
    assert http.closed
    with pytest.raises(TokenUnavailableError, match="closed"):
        await holder.get()


async def test_cancelling_the_owner_mid_fetch_cleans_up(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    fake.token_delay = 30
    ready = anyio.Event()

    async def owner() -> None:
        async with TokenManager() as tokens:
            holder = tokens.add(provider_for(fake))
            ready.set()
            await holder.get()  # blocked on the slow fetch

    task = asyncio.create_task(owner())
    await ready.wait()
    await eventually(lambda: fake.token_calls == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [] == sdk_tasks()


async def test_waiters_are_failed_when_the_manager_closes(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    fake.token_delay = 30
    results: list[BaseException] = []
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))

        async def wait() -> None:
            try:
                await holder.get()
            except TokenUnavailableError as err:
                results.append(err)

        waiters = [asyncio.create_task(wait()) for _ in range(5)]
        await eventually(lambda: fake.token_calls == 1)
    await asyncio.gather(*waiters)
    assert 5 == len(results)
    assert all(not err.retryable for err in results if isinstance(err, TokenUnavailableError))


async def test_a_cancelled_waiter_does_not_disturb_the_shared_fetch(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    fake.token_delay = 0.3
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        doomed = asyncio.create_task(holder.get())
        survivor = asyncio.create_task(holder.get())
        await asyncio.sleep(0.05)
        doomed.cancel()
        token = await survivor
        assert doomed.cancelled()
        assert token is holder.current
    assert 1 == fake.token_calls


async def test_wait_bound_gives_a_typed_error_with_the_last_cause(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    fake.queue(*[Scripted(status=503, body="<html>down</html>")] * 50)
    policy = RefreshPolicy(wait_timeout=0.5, backoff_initial=0.05, backoff_max=0.1)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake))
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError) as info:
            await holder.get()
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2
    err = info.value
    assert err.retryable
    assert err.last_error is not None
    assert "503" in str(err.last_error)
    assert err.__cause__ is err.last_error
    assert fake.token_calls >= 3  # kept retrying with backoff meanwhile


async def test_keeps_serving_the_current_token_while_refreshes_fail(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=2.0)
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.1)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        fake.queue(Scripted(status=500), Scripted(drop=True), Scripted(body="{trunc"))
        await eventually(lambda: holder.health().failures == 3, within=3)
        assert token is holder.usable()  # still served while it lives
        await eventually(lambda: holder.current is not token, within=3)
    assert 5 == fake.token_calls


async def test_refresher_survives_an_unexpected_exception(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    policy = RefreshPolicy(backoff_initial=0.01, backoff_max=0.02)
    calls = 0

    class Flaky:
        def __init__(self, inner: TokenSource) -> None:
            self.inner = inner

        async def fetch(self, refresh_token: Secret | None) -> Token:
            nonlocal calls
            calls += 1
            if calls == 1:
                msg = "bug in a custom token source"
                raise RuntimeError(msg)
            return await self.inner.fetch(refresh_token)

    def source(holder: TokenHolder, inner: TokenSource) -> Flaky:
        return Flaky(inner)

    async with TokenManager(policy=policy, token_source=source) as tokens:
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
    assert token is not None
    assert 2 == calls
    assert 1 == holder.health().failures


async def test_same_token_handed_back_is_not_asked_again_at_once(
    fake_provider: FakeProviderFactory,
) -> None:
    # A provider that returns the same token until shortly before expiry:
    # a naive refresher asks again at once, over and over.
    fake = await fake_provider("cm", lifetime=60)
    body = {"access_token": "same-token-every-time", "expires_in": 1, "token_type": "Bearer"}
    fake.queue(*[Scripted(json=body)] * 200)
    policy = RefreshPolicy(backoff_initial=0.2, backoff_max=0.4)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        await anyio.sleep(1.5)
    # A 1 s token is refreshed 0.45-0.5 s after it arrives, so this bound
    # holds even without the repeat backoff: it proves no storm, not the
    # backoff. test_refresher.py's same-token tests prove the backoff, on
    # tokens that arrive past their refresh point.
    assert fake.token_calls <= 10


async def test_misuse_raises_config_errors(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm")
    profile = provider_for(fake)
    manager = TokenManager()
    with pytest.raises(ConfigError, match="inside 'async with TokenManager"):
        manager.add(profile)
    async with TokenManager() as tokens, TokenManager() as other:
        holder = tokens.add(profile)
        with pytest.raises(ConfigError, match="already added"):
            tokens.add(profile)
        with pytest.raises(ConfigError, match="not added to this manager"):
            other.middleware(holder)
        with pytest.raises(ConfigError, match="own connector"):
            tokens.session(holder, connector=None)
        with pytest.raises(ConfigError, match="at least 1"):
            tokens.session(holder, limit=0)
        assert (holder,) == tokens.holders()
        with pytest.warns(DeprecationWarning, match=r"use await holder.get\(timeout\)"):
            assert await tokens.token(holder, timeout=5) is holder.current
    with pytest.raises(ConfigError, match="only once"):
        await tokens.__aenter__()


async def test_cancelled_while_entering_leaves_nothing_running_or_open() -> None:
    manager = TokenManager()

    async def owner() -> None:
        async with manager:
            pytest.fail("entered a manager whose owner was cancelled")

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)  # owner runs up to the wait for the runner task
    assert manager._token_session is not None  # the session exists: it must be closed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [] == sdk_tasks()
    assert manager._token_session.closed
    with pytest.raises(ConfigError, match="closed"):
        manager.session()


async def test_entering_under_a_cancelled_anyio_scope_cleans_up() -> None:
    # An anyio scope re-delivers cancellation at every await, also in the cleanup.
    manager = TokenManager()
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with manager:
            pytest.fail("entered under a cancelled scope")
    assert scope.cancelled_caught
    assert [] == sdk_tasks()
    assert manager._token_session is not None
    assert manager._token_session.closed


async def test_leaving_through_an_anyio_cancel_scope_still_cleans_up(
    fake_provider: FakeProviderFactory,
) -> None:
    # task.cancel() is delivered once, so it cannot show whether aclose() is
    # shielded; an anyio scope cancels every await in aclose() unless it is.
    fake = await fake_provider("cm")
    fake.token_delay = 30
    with anyio.CancelScope() as scope:
        async with TokenManager() as tokens:
            holder = tokens.add(provider_for(fake))
            http = tokens.session(holder)
            await eventually(lambda: fake.token_calls == 1)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert [] == sdk_tasks()
    assert http.closed
    assert "closed" == holder.health().state
    with pytest.raises(TokenUnavailableError, match="closed"):
        await holder.get()


async def test_nothing_is_handed_out_after_close(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm")
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
    for use in (
        lambda: tokens.session(holder),
        tokens.session,
        lambda: tokens.middleware(holder),
        tokens.middleware,
        lambda: tokens.add(provider_for(fake, name="late")),
    ):
        with pytest.raises(ConfigError, match="this TokenManager is closed"):
            use()
    await tokens.aclose()  # idempotent
