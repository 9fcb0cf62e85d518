"""The refresher and the holder against an independent RFC 6749 token endpoint (tests/endpoints)."""

from __future__ import annotations

import time

import anyio
import pytest
from aiohttp import web

from aiopay_auth import RefreshPolicy, Token, TokenHolder, TokenManager, TokenUnavailableError
from aiopay_auth._writer import HolderWriter
from aiopay_auth.exceptions import TokenRequestError, TokenResponseError

from .endpoints import WebEndpoint, make_provider, oauth_error, token_json
from .helpers import ManualClock, eventually


pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- unhealable


@pytest.mark.parametrize("then", ["token-expires", "api-answers-401"])
async def test_an_unhealable_error_met_while_a_token_is_served_fails_waiters_at_once(
    endpoint: WebEndpoint, then: str
) -> None:
    """invalid_client at a refresh, while the old token is still usable.

    Once that token is gone (expired, or refused by the API), every caller
    fails at once with the error chained, not at the wait bound. The next
    attempt is far away (``unhealable_retry`` above the wait bound, as with
    the defaults: 60 s and 30 s), so nothing but the recorded error can end
    the wait early.
    """

    async def token(_: web.Request) -> web.Response:
        if len(endpoint.calls) == 1:
            return token_json("tok-1", 2.0)
        return oauth_error(401, "invalid_client", "client authentication failed")

    endpoint.handler = token
    wait_timeout = 4.0
    policy = RefreshPolicy(wait_timeout=wait_timeout, unhealable_retry=60.0)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        first = await holder.get()
        await eventually(lambda: holder.health().failures >= 1, within=4)
        if then == "token-expires":
            await eventually(lambda: holder.usable() is None, within=3)
            started = time.monotonic()
            with pytest.raises(TokenUnavailableError) as caught:
                await holder.get()
        else:
            endpoint.api_status = 401
            http = tokens.session(holder)
            started = time.monotonic()
            with pytest.raises(TokenUnavailableError) as caught:
                await http.get(f"{endpoint.base}/api/pay")
            endpoint.api_status = 200
        seconds_to_fail = time.monotonic() - started
        # No await stands between the caller and the error: far below the bound.
        assert seconds_to_fail < wait_timeout / 3, seconds_to_fail
        err = caught.value
        assert not err.retryable
        assert isinstance(err.last_error, TokenResponseError)
        assert "invalid_client" == err.last_error.error
        assert err.__cause__ is err.last_error
        assert first is not holder.usable()
        assert "failing" == holder.state


def unhealable() -> TokenResponseError:
    return TokenResponseError("invalid_client", provider="p", status=401, error="invalid_client")


@pytest.mark.parametrize(
    "order",
    [
        "fail-then-expire",
        "fail-then-invalidate",
        "expire-then-fail",
        "fail-then-retryable-failure",
        "fail-then-publish",
    ],
)
async def test_the_holder_fails_at_once_on_an_unhealable_error_whatever_the_order(
    order: str,
) -> None:
    clock = ManualClock()
    holder = TokenHolder(make_provider("http://127.0.0.1:9"), clock=clock, wait_timeout=30)
    writer = HolderWriter(holder)  # the test plays the refresher's part
    served = Token.bearer("tok-1", issued_at=clock.now, lifetime=10.0)
    writer.publish(served)
    if order == "expire-then-fail":
        clock.now += 11
        writer.record_failure(unhealable())
    else:
        writer.record_failure(unhealable())
        assert served is await holder.get()  # still served while it lives
        if order == "fail-then-invalidate":
            holder.invalidate(served)
        else:
            clock.now += 11
    if order == "fail-then-retryable-failure":
        # The latest failure may heal: callers wait for the next attempt.
        writer.record_failure(TokenRequestError("reset", provider="p"))
        with pytest.raises(TokenUnavailableError, match="within the wait bound"):
            await holder.get(timeout=0.05)
        return
    if order == "fail-then-publish":
        fresh = Token.bearer("tok-2", issued_at=clock.now, lifetime=10.0)
        writer.publish(fresh)  # a later success clears it
        assert fresh is await holder.get()
        return
    with anyio.fail_after(1):  # at once: no wait bound (30 s) involved
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get()
    assert not caught.value.retryable
    assert caught.value.__cause__ is caught.value.last_error


# --------------------------------------------------------------------------- retry before half-life


async def test_a_transient_failure_is_retried_before_half_the_remaining_life(
    endpoint: WebEndpoint,
) -> None:
    """The backoff (2.5-5 s here) would outlive the token; the rule brings the retry in."""

    async def token(_: web.Request) -> web.Response:
        if len(endpoint.calls) == 1:
            return token_json("tok-1", 2.0)  # exact: refreshed 0.9-1.0 s after issue
        return web.json_response({"error": "server_error"}, status=503)

    endpoint.handler = token
    policy = RefreshPolicy(backoff_initial=5.0, backoff_max=5.0)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        served = await holder.get()
        await eventually(lambda: len(endpoint.calls) >= 3, within=3)
        assert served is holder.usable() or served.expires_at <= time.monotonic()
    failed_at, retried_at = endpoint.calls[1], endpoint.calls[2]
    half_of_remaining = (served.expires_at - failed_at) / 2
    assert half_of_remaining < 0.6  # the refresh point: about 1 s left of 2
    # Scheduling slack for a loaded machine, far below the 2.5 s backoff floor.
    assert retried_at - failed_at <= half_of_remaining + 0.3
    assert retried_at < served.expires_at


async def test_the_floor_runs_on_real_time_even_with_an_injected_clock_standing_still(
    endpoint: WebEndpoint,
) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.json_response({"error": "temporarily_unavailable"}, status=503)

    endpoint.handler = unavailable
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.05)
    async with TokenManager(policy=policy, clock=lambda: 1000.0) as tokens:
        tokens.add(make_provider(endpoint.base))
        # Each retry waits for the floor on the event loop's clock, not the frozen one.
        await eventually(lambda: len(endpoint.calls) >= 3, within=3)


# --------------------------------------------------------------------------- caching server


@pytest.mark.parametrize(
    "last_answer", [1, 0], ids=["down-to-expires_in-1", "down-to-expires_in-0"]
)
async def test_a_caching_server_rollover_does_not_stall_requests(
    endpoint: WebEndpoint, last_answer: int
) -> None:
    """A server hands back its cached token until it expires, ``expires_in`` in whole seconds.

    Before the fix the "same token" backoff grew past the token's life, so
    each rollover stalled every request about 2 s.
    """
    ttl = 3.0
    expires = [0.0]
    issued: list[str] = []

    async def token(_: web.Request) -> web.Response:
        now = time.monotonic()
        if now >= expires[0] - last_answer:
            issued.append(f"cached-{len(issued)}")
            expires[0] = now + ttl
        left = int(expires[0] - now)  # floor: whole seconds left
        return token_json(issued[-1], left)

    endpoint.handler = token
    async with TokenManager() as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await holder.get()
        waits: list[float] = []
        deadline = time.monotonic() + 2 * ttl + 0.5  # two rollovers
        while time.monotonic() < deadline:
            started = time.monotonic()
            await holder.get()
            waits.append(time.monotonic() - started)
            await anyio.sleep(0.02)
    assert len(issued) >= 3, waits
    # Down to 1: the new token comes while the old one is served, so no
    # request should wait (slack for a loaded machine). Down to 0: the
    # client believes a token until the server's last whole second at worst
    # (1 s early) and asks at the floor cadence (0.1 s) from there, plus
    # slack. Before: 1-2 s, and retries seconds apart after the token ran out.
    bound = 0.3 if last_answer else 1.2
    assert max(waits) <= bound, max(waits)
