"""The refresher's choices, read from what the token endpoint saw and what it logged.

Each test runs a real :class:`TokenManager` against the independent token
endpoint of ``tests/endpoints.py`` on 127.0.0.1. Where a delay must be
exact, the manager runs on an injected clock that only the endpoint moves
(a request "takes" as long as the test says), so the delays the refresher
computes, and logs, are exact whatever the machine's load.
"""

from __future__ import annotations

import itertools
import logging

import anyio
import pytest
from aiohttp import web

from aiopay_auth import RefreshPolicy, Secret, Token, TokenHolder, TokenManager, TokenSource

from .endpoints import WebEndpoint, make_provider, oauth_error, token_json
from .helpers import ManualClock, events, eventually


pytestmark = pytest.mark.anyio

NAME = "hostile"  # make_provider's name


def bounded(**options: float) -> RefreshPolicy:
    """The test's policy, with a wait bound short enough to fail a stuck test soon."""
    return RefreshPolicy(wait_timeout=5.0, **options)


def unavailable(retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return web.json_response({"error": "temporarily_unavailable"}, status=503, headers=headers)


async def drop(holder: TokenHolder, token: Token) -> None:
    """Invalidate *token* as a 401 would, once the holder's refusal backoff allows."""
    while not holder.invalidate(token):  # noqa: ASYNC110 - the backoff is a time, no event
        await anyio.sleep(holder.refusal_backoff())


# --------------------------------------------------------------------------- grants


async def test_the_refresh_grant_is_used_rotated_and_dropped_once_refused(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    grants: list[tuple[str, str | None]] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        grant = str(form["grant_type"])
        refresh = form.get("refresh_token")
        grants.append((grant, None if refresh is None else str(refresh)))
        n = len(grants)
        if n == 4:
            return unavailable()  # retryable: the same refresh token is asked again
        if n == 5:
            return oauth_error(400, "invalid_grant", "refresh token expired")
        extra = {"refresh_token": f"r{n}"} if n in (1, 2) else {}
        return token_json(f"tok-{n}", 3600, **extra)

    endpoint.handler = token
    policy = bounded(backoff_initial=0.01, backoff_max=0.02)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base, refresh_token="r0"))
        for n in (1, 2, 3, 6, 7):
            got = await holder.get()
            assert f"tok-{n}" == got.access_token, grants
            await drop(holder, got)
        await eventually(lambda: len(grants) == 8)
    assert [
        ("refresh_token", "r0"),  # the provider's own refresh token first
        ("refresh_token", "r1"),
        ("refresh_token", "r2"),  # rotated
        ("refresh_token", "r2"),  # kept: tok-3 came without one; 503
        ("refresh_token", "r2"),  # refused ...
        ("client_credentials", None),  # ... so the primary grant at once
        ("client_credentials", None),  # and from then on
        ("client_credentials", None),
    ] == grants
    assert (8, 1) == (holder.health().fetches, holder.health().failures)  # a refusal is not one
    assert [(logging.INFO, {"provider": NAME, "error": "invalid_grant", "status": 400})] == events(
        records, "refresh_token_refused"
    )


async def test_token_requests_start_no_sooner_than_the_floor_after_the_last(
    endpoint: WebEndpoint,
) -> None:
    async def token(_: web.Request) -> web.Response:
        return unavailable()

    endpoint.handler = token
    starts: list[float] = []

    class Timed:
        def __init__(self, inner: TokenSource) -> None:
            self.inner = inner

        async def fetch(self, refresh_token: Secret | None) -> Token:
            starts.append(anyio.current_time())
            return await self.inner.fetch(refresh_token)

    def timed(_: TokenHolder, inner: TokenSource) -> Timed:
        return Timed(inner)

    floor = 0.15
    policy = bounded(backoff_initial=0.001, backoff_max=0.001, min_fetch_interval=floor)
    async with TokenManager(policy=policy, token_source=timed) as tokens:
        tokens.add(make_provider(endpoint.base))
        await eventually(lambda: len(starts) >= 4)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # The backoff is 1 ms; the floor holds each start back. Slack: the loop
    # time between the refresher's reading and ours (no await between them,
    # but a loaded machine may preempt the process there).
    assert min(gaps) >= floor - 0.02, gaps


# --------------------------------------------------------------------------- failures


async def test_failures_are_logged_with_their_retry_once_per_change_of_state(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    clock = ManualClock()

    async def token(_: web.Request) -> web.Response:
        n = len(endpoint.calls)
        if n == 1:
            clock.now += 99.6  # the answer comes with 0.4 s of the token's 100 left
            return token_json("tok-1", 100.0)
        if n == 4:
            clock.now += 1.0  # now it has expired
        if n == 5:
            return unavailable(retry_after="30")
        return unavailable()

    endpoint.handler = token
    policy = bounded(backoff_initial=1.0, backoff_max=60.0)
    async with TokenManager(policy=policy, clock=clock) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await eventually(lambda: holder.health().failures == 4, within=10)
        await eventually(lambda: len(events(records, "fetch_failed")) == 4)
    failed = events(records, "fetch_failed")
    error = f"[{NAME}] token endpoint answered HTTP 503: temporarily_unavailable"
    common = {"provider": NAME, "kind": "server_error", "retryable": True}
    assert failed[0] == (
        logging.WARNING,
        {**common, "error": error, "attempt": 1, "retry_in": 0.2, "state": "degraded"},
    )  # a token still served: retried halfway to its expiry (0.4 s left)
    assert failed[1] == (
        logging.DEBUG,  # the same failure in the same state: once at WARNING
        {**common, "error": error, "attempt": 2, "retry_in": 0.2, "state": "degraded"},
    )
    level, third = failed[2]
    assert (logging.WARNING, 3, "failing") == (level, third["attempt"], third["state"])
    # No token left: the backoff starts over from the first step (0.5-1 s),
    # not from the third (2-4 s): the retries made while a token was served
    # were hurried by its expiry, not by the provider.
    assert 0.5 <= third["retry_in"] <= 1.0, third
    level, fourth = failed[3]
    assert (logging.DEBUG, 4, 30.0) == (level, fourth["attempt"], fourth["retry_in"])
    assert fourth["error"].startswith(error)  # Retry-After wins over the backoff


async def test_an_unhealable_failure_waits_the_unhealable_retry(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    async def token(_: web.Request) -> web.Response:
        return oauth_error(401, "invalid_client")

    endpoint.handler = token
    policy = bounded(backoff_initial=0.01, backoff_max=0.01, unhealable_retry=40.0)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await eventually(lambda: holder.health().failures == 1)
    [(level, fields)] = events(records, "fetch_failed")
    assert (logging.WARNING, "rejected", False, 1, "failing") == (
        level,
        fields["kind"],
        fields["retryable"],
        fields["attempt"],
        fields["state"],
    )
    assert 20.0 <= fields["retry_in"] <= 40.0, fields


async def test_recovery_and_each_token_are_logged(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    async def token(_: web.Request) -> web.Response:
        if len(endpoint.calls) <= 2:
            return unavailable()
        return token_json("tok-1", 3600.0004)

    endpoint.handler = token
    policy = bounded(backoff_initial=0.01, backoff_max=0.02)
    clock = ManualClock()  # standing still: the refresh point is exact
    async with TokenManager(policy=policy, clock=clock) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        got = await holder.get()
        await eventually(lambda: bool(events(records, "token_fetched")))
    assert [(logging.INFO, {"provider": NAME, "after_failures": 2})] == events(records, "recovered")
    [(level, fetched)] = events(records, "token_fetched")
    assert logging.DEBUG == level
    refresh_in = fetched.pop("refresh_in")
    assert {
        "provider": NAME,
        "fingerprint": got.fingerprint,
        "lifetime": 3600.0,  # to the millisecond
        "same_token": False,
    } == fetched
    # Refreshed max_margin (300 s, +0-10 % jitter) before expiry.
    assert 3600.0004 - 330.0 <= refresh_in <= 3600.0004 - 300.0, fetched
    assert_shown_to_the_ms(refresh_in)
    assert_shown_to_the_ms(fetched["lifetime"])


async def test_an_unexpected_exception_is_logged_as_a_crash_and_retried(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    async def token(_: web.Request) -> web.Response:
        return token_json("tok-1", 3600)

    endpoint.handler = token
    calls = 0

    class Flaky:
        def __init__(self, inner: TokenSource) -> None:
            self.inner = inner

        async def fetch(self, refresh_token: Secret | None) -> Token:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("bug")
            return await self.inner.fetch(refresh_token)

    def flaky(_: TokenHolder, inner: TokenSource) -> Flaky:
        return Flaky(inner)

    policy = bounded(backoff_initial=0.01, backoff_max=0.02)
    async with TokenManager(policy=policy, token_source=flaky) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await holder.get()
    assert (2, 1) == (holder.health().fetches, holder.health().failures)
    assert {"unexpected": 1} == holder.health().failures_by_kind
    [(level, crash)] = events(records, "refresher_crashed")
    assert logging.ERROR == level
    assert f"[{NAME}] unexpected KeyError in refresher" == crash["error"]
    assert ("unexpected", True, 1) == (crash["kind"], crash["retryable"], crash["attempt"])
    assert "builtins.KeyError" == crash["exc_type"]
    assert [] == events(records, "fetch_failed")


# --------------------------------------------------------------------------- same token


async def test_the_same_token_handed_back_is_asked_again_on_a_growing_backoff(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    """A caching server hands back the token it holds, with little left of it.

    Each answer takes 90 of the token's 100 s on the injected clock, so its
    refresh point has passed when it arrives: without the repeat backoff the
    refresher would ask again at once.
    """
    clock = ManualClock()

    async def token(_: web.Request) -> web.Response:
        n = len(endpoint.calls)
        clock.now += 90.0
        return token_json("tok-b" if n >= 4 else "tok-a", 100.0)

    endpoint.handler = token
    policy = bounded(backoff_initial=0.2, backoff_max=60.0, min_fetch_interval=0.01)
    async with TokenManager(policy=policy, clock=clock) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        await eventually(lambda: len(events(records, "token_fetched")) >= 6, within=10)
    fetched = [fields for _, fields in events(records, "token_fetched")][:6]
    assert [False, True, True, False, True, True] == [f["same_token"] for f in fetched]
    delays = [f["refresh_in"] for f in fetched]
    assert 0.0 == delays[0] == delays[3]  # a new token past its refresh point
    for delay, low, high in zip(delays[1:3], (0.1, 0.2), (0.2, 0.4), strict=True):
        assert low <= delay <= high, delays  # backoff(1), backoff(2)
    for delay, low, high in zip(delays[4:6], (0.1, 0.2), (0.2, 0.4), strict=True):
        assert low <= delay <= high, delays  # a new token started the count over
    for delay in delays:
        assert_shown_to_the_ms(delay)
    assert 0 == holder.health().failures


async def test_the_same_token_is_asked_again_no_later_than_halfway_to_its_expiry(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    clock = ManualClock()

    async def token(_: web.Request) -> web.Response:
        clock.now += 99.0  # 1 s left of 100 when it arrives
        return token_json("tok-a", 100.0)

    endpoint.handler = token
    policy = bounded(backoff_initial=30.0, backoff_max=60.0, min_fetch_interval=0.01)
    async with TokenManager(policy=policy, clock=clock) as tokens:
        tokens.add(make_provider(endpoint.base))
        await eventually(lambda: len(events(records, "token_fetched")) >= 3, within=10)
    fetched = [fields for _, fields in events(records, "token_fetched")][:3]
    assert [(False, 0.0), (True, 0.5), (True, 0.5)] == [
        (f["same_token"], f["refresh_in"]) for f in fetched
    ]


async def test_the_backoff_grows_with_each_failure_in_a_row_and_starts_over_after_a_success(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    answers = iter(
        [
            unavailable(),  # 1: from the start, no token
            unavailable(),  # 2
            oauth_error(503, "server_busy"),  # 3: another error: WARNING again
            token_json("tok-1", 3600),
            unavailable(),  # after an invalidation: no token served, the count restarts
            unavailable(),
            token_json("tok-2", 3600),
        ]
    )

    async def token(_: web.Request) -> web.Response:
        return next(answers)

    endpoint.handler = token
    policy = bounded(backoff_initial=0.1, backoff_multiplier=2.0, backoff_max=60.0)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        first = await holder.get()
        assert "tok-1" == first.access_token
        holder.invalidate(first)
        assert "tok-2" == (await holder.get()).access_token
    failed = events(records, "fetch_failed")
    assert [1, 2, 3, 1, 2] == [fields["attempt"] for _, fields in failed]
    assert [logging.WARNING, logging.DEBUG, logging.WARNING, logging.WARNING, logging.DEBUG] == [
        level for level, _ in failed
    ]
    bounds = [(0.05, 0.1), (0.1, 0.2), (0.2, 0.4), (0.05, 0.1), (0.1, 0.2)]  # equal jitter
    for (_, fields), (low, high) in zip(failed, bounds, strict=True):
        assert low <= fields["retry_in"] <= high, failed
        assert "failing" == fields["state"]
    assert [
        (logging.INFO, {"provider": NAME, "after_failures": 3}),
        (logging.INFO, {"provider": NAME, "after_failures": 2}),
    ] == events(records, "recovered")
    for _, fields in failed:
        assert_shown_to_the_ms(fields["retry_in"])


def assert_shown_to_the_ms(seconds: object) -> None:
    """Durations in log events are floats rounded to the millisecond."""
    assert isinstance(seconds, float)
    assert seconds == round(seconds, 3)


async def test_the_state_is_refreshing_while_a_fetch_for_a_usable_token_is_in_flight(
    endpoint: WebEndpoint,
) -> None:
    clock = ManualClock()
    release = anyio.Event()

    async def token(_: web.Request) -> web.Response:
        if len(endpoint.calls) == 1:
            clock.now += 90.0  # past its refresh point, 10 s of 100 left
        else:
            await release.wait()
        return token_json(f"tok-{len(endpoint.calls)}", 100.0)

    endpoint.handler = token
    try:
        async with TokenManager(policy=bounded(), clock=clock) as tokens:
            holder = tokens.add(make_provider(endpoint.base))
            first = await holder.get()
            await eventually(lambda: len(endpoint.calls) == 2)
            assert first is holder.usable()
            assert "refreshing" == holder.state
            release.set()
            await eventually(lambda: holder.current is not first)
            await eventually(lambda: "fresh" == holder.state)
    finally:
        release.set()  # or the server's shutdown would wait for the handler


async def test_while_a_token_is_served_the_backoff_grows_as_usual_below_its_cap(
    endpoint: WebEndpoint, records: list[logging.LogRecord]
) -> None:
    clock = ManualClock()

    async def token(_: web.Request) -> web.Response:
        if len(endpoint.calls) == 1:
            clock.now += 800.0  # past the refresh point, 200 s of 1000 left
            return token_json("tok-1", 1000.0)
        return unavailable()

    endpoint.handler = token
    policy = bounded(backoff_initial=0.1, backoff_max=60.0)
    async with TokenManager(policy=policy, clock=clock) as tokens:
        tokens.add(make_provider(endpoint.base))
        await eventually(lambda: len(events(records, "fetch_failed")) >= 3)
    failed = [fields for _, fields in events(records, "fetch_failed")][:3]
    # The cap, half the 200 s left, is far above: the usual 0.1 s doubling.
    for fields, (low, high) in zip(failed, [(0.05, 0.1), (0.1, 0.2), (0.2, 0.4)], strict=True):
        assert low <= fields["retry_in"] <= high, failed
        assert "degraded" == fields["state"]
