"""
The fault matrix: every token-endpoint fault against every provider dialect.

Each case runs a real manager against the strict loopback fake with logging
at DEBUG, sends real API requests through the manager's session the whole
time, injects one fault into the proactive refresh (and holds the retry at
the server), and asserts what a worker would observe, by the server's
counts: the old token keeps serving through the fault, no request fails,
none is refused as expired and none waits for a token; the failure is
counted by kind, recovery comes with exactly one extra token call (after
``Retry-After`` if one was sent), and no secret or token appears in any log
line, repr or error message.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anyio
import pytest
from yarl import URL

from aiopay_auth import FailureKind, RefreshPolicy, TokenManager, TokenUnavailableError
from aiopay_auth.testing import Dialect, FakeProvider, Scripted, blackhole, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .helpers import eventually


pytestmark = pytest.mark.anyio

DIALECTS: list[Dialect] = ["cm", "vonage", "payme", "oro", "rfc6749"]
FETCH_TIMEOUT = 0.3
POLICY = RefreshPolicy(
    fetch_timeout=FETCH_TIMEOUT, backoff_initial=0.05, backoff_max=0.2, wait_timeout=5
)


# What a retry at the asked instant may take beyond it: the 429 call before the
# wait, the retry itself and the event loop's wake-up, on a loaded machine.
# Well under the 1 s resolution of an HTTP-date, so that an error of a whole
# second shows.
RETRY_SLACK = 0.5


def _http_date(seconds_ahead: int) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


# name -> (fault factory, expected kind, least delay before the retry)
FAULTS: dict[str, tuple[Callable[[], Scripted], FailureKind, float]] = {
    "http-500": (lambda: Scripted(status=500, json={"error": "server_error"}), "server_error", 0),
    "http-503-html": (
        lambda: Scripted(
            status=503,
            body="<html><body><h1>503 Service Unavailable</h1></body></html>",
            headers={"Content-Type": "text/html"},
        ),
        "server_error",
        0,
    ),
    "http-429-retry-after-seconds": (
        lambda: Scripted(status=429, headers={"Retry-After": "1"}),
        "throttled",
        1.0,
    ),
    "read-timeout": (lambda: Scripted(delay=FETCH_TIMEOUT * 4), "timeout", 0),
    "reset-before-answer": (lambda: Scripted(drop=True), "connection", 0),
    "reset-mid-body": (
        lambda: Scripted(
            json={"access_token": "x" * 40, "expires_in": 60, "token_type": "Bearer"},
            truncate=12,
        ),
        "connection",
        0,
    ),
    "malformed-json": (lambda: Scripted(body="{not json at all"), "bad_response", 0),
    "truncated-json": (
        lambda: Scripted(body='{"access_token": "abc", "expi'),
        "bad_response",
        0,
    ),
    "html-200": (
        lambda: Scripted(body="<html>maintenance</html>", headers={"Content-Type": "text/html"}),
        "bad_response",
        0,
    ),
    "no-access-token": (
        lambda: Scripted(json={"token_type": "Bearer", "expires_in": 60}),
        "bad_response",
        0,
    ),
}

PAYME_ENVELOPE_FAILURE = {
    "action": "authorize",
    "success": False,
    "authorization": {
        "meta": {
            "status": {
                "code": "01",
                "message_ilgn": [{"locale": "es_PE", "value": "Servicio no disponible"}],
            }
        }
    },
}

MATRIX = [
    pytest.param(dialect, fault, id=f"{dialect}-{fault}")
    for dialect in DIALECTS
    for fault in [*FAULTS, *(["payme-success-false"] if dialect == "payme" else [])]
]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.events: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "aiopay_auth", {})
        self.events.append((record.levelname, fields.get("event", "")))
        self.lines.append(record.getMessage())
        self.lines.append(repr(fields))
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@pytest.fixture(name="logs")
def _logs() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("aiopay_auth")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def assert_no_secrets(fake: FakeProvider, texts: list[str]) -> None:
    secrets = {fake.client_secret, fake.password} | fake.issued_tokens
    secrets |= fake.issued_refresh_tokens
    blob = "\n".join(texts)
    assert [] == sorted(s for s in secrets if s in blob)


def fault_for(name: str) -> tuple[Scripted, FailureKind, float]:
    if name == "payme-success-false":
        return Scripted(json=PAYME_ENVELOPE_FAILURE), "provider_failure", 0
    factory, kind, retry_after = FAULTS[name]
    return factory(), kind, retry_after


class Traffic:
    """Workers sending real API requests through the manager's session (FairPool and
    BearerAuth), recording the ``Authorization`` each request was sent with.

    The header is read as it goes on the wire (aiohttp's ``on_request_headers_sent``
    trace), since BearerAuth drops its token from the request once it is answered.
    """

    def __init__(self) -> None:
        self.carried: list[str | None] = []
        self.statuses: list[int] = []
        self.stop = anyio.Event()
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_headers_sent.append(self._sent)

    async def _sent(
        self,
        _: aiohttp.ClientSession,
        __: object,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        self.carried.append(params.headers.get("Authorization"))

    async def worker(self, http: aiohttp.ClientSession, url: URL) -> None:
        while not self.stop.is_set():
            async with http.get(url) as response:
                await response.read()
                self.statuses.append(response.status)
            await anyio.sleep(0.005)


# The retry after the fault is held this long at the server: the old token
# must keep serving real requests for at least this long.
HOLD = 0.2


@pytest.mark.parametrize(("dialect", "fault"), MATRIX)
async def test_transient_fault_keeps_serving_and_recovers(
    fake_provider: FakeProviderFactory, logs: Collect, dialect: Dialect, fault: str
) -> None:
    scripted, kind, retry_after = fault_for(fault)
    # The refresh starts at half the lifetime at the latest; the fault (at most
    # the fetch timeout), the backoff or Retry-After, and the held retry must
    # fit in the other half, with 0.25 s to spare.
    lifetime = 2 * (FETCH_TIMEOUT + POLICY.backoff_initial + retry_after + HOLD) + 0.5
    fake = await fake_provider(dialect, lifetime=lifetime)
    async with TokenManager(policy=POLICY) as tokens:
        holder = tokens.add(provider_for(fake))
        first = await holder.get()
        waits = holder.health().waits
        traffic = Traffic()
        async with (
            tokens.session(holder, limit=4, trace_configs=[traffic.trace]) as http,
            anyio.create_task_group() as tg,
        ):
            for _ in range(2):
                tg.start_soon(traffic.worker, http, fake.api_base / "charges")
            fake.queue(scripted)
            fake.token_delay = HOLD  # the retry (unscripted) is held
            await eventually(lambda: holder.health().failures == 1, within=lifetime + 1)
            failed_at = time.monotonic()
            served_before = len(traffic.carried)
            # The failed refresh did not disturb the token being served.
            assert first is holder.usable()
            assert "degraded" == holder.state
            assert {kind: 1} == holder.health().failures_by_kind
            health = holder.health()
            assert kind == health.last_error_kind
            assert health.expires_in is not None
            assert health.expires_in > 0
            await eventually(lambda: holder.current is not first, within=lifetime)
            recovered_at = time.monotonic()
            second = holder.current
            assert second is not None
            # Real requests went on through the fault on the old token...
            assert first.header in traffic.carried[served_before:]
            # ...and onto the new one.
            renewed, renewed_at = second.header, second.issued_at
            await eventually(lambda: renewed in traffic.carried, within=lifetime)
            traffic.stop.set()
        assert "fresh" == holder.health().state
        # Recovered before the first token expired, by the server's clock: it
        # refused nothing, every request succeeded, and none waited for a token.
        assert (0, 0) == (fake.api_expired, fake.api_unauthorized)
        assert len(traffic.statuses) == traffic.statuses.count(200) == fake.api_calls
        assert renewed_at < first.expires_at
        assert waits == holder.health().waits
        assert 0 == holder.health().recoveries
        if retry_after:
            assert recovered_at - failed_at >= retry_after - 0.05
        else:
            assert recovered_at - failed_at < 0.5 + HOLD
        texts = [repr(holder), repr(holder.health()), str(holder.last_error), repr(first)]
    assert 3 == fake.token_calls  # first fetch, the fault, one retry
    assert [] == fake.rejected
    assert_no_secrets(fake, texts + logs.lines)


UNHEALABLE: list[Dialect] = ["cm", "vonage", "oro", "rfc6749"]


@pytest.mark.parametrize("dialect", UNHEALABLE)
async def test_bad_credentials_fail_every_waiter_at_once_without_storming(
    fake_provider: FakeProviderFactory, logs: Collect, dialect: Dialect
) -> None:
    fake = await fake_provider(dialect, lifetime=60)
    right_secret = fake.client_secret
    fake.client_secret = "rotated-at-the-provider"
    policy = RefreshPolicy(unhealable_retry=0.4, wait_timeout=10)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake, client_secret=right_secret))
        started = time.monotonic()
        results: list[TokenUnavailableError] = []

        async def waiter() -> None:
            try:
                await holder.get()
            except TokenUnavailableError as err:
                results.append(err)

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(waiter)
        assert time.monotonic() - started < 2  # at once, not at the 10 s bound
        assert 100 == len(results)
        err = results[0]
        assert not err.retryable
        assert err.last_error is not None
        assert "invalid_client" in str(err)
        assert "failing" == holder.state
        # A slow, bounded cadence while it stays broken: no storm. It keeps
        # retrying, and the retries come at least unhealable_retry / 2 apart
        # (equal jitter), so the k-th call arrives no sooner than
        # started + (k - 1) * unhealable_retry / 2.
        await eventually(lambda: fake.token_calls >= 3, within=3 * policy.unhealable_retry + 1)
        calls = fake.token_calls
        elapsed = time.monotonic() - started
        assert calls <= 1 + elapsed / (policy.unhealable_retry / 2)
        # A credential fixed at the provider is picked up...
        fake.client_secret = right_secret
        await eventually(lambda: holder.usable() is not None, within=1)
        assert "fresh" == holder.health().state
        # ...and, now that no call can be in flight (the next one is the
        # refresh of a 60 s token), every refused call was logged: once at
        # WARNING, the repeats only at DEBUG; then one call succeeded.
        failed = [level for level, event in logs.events if event == "aiopay_auth.fetch_failed"]
        assert fake.token_calls == len(failed) + 1
        assert ["WARNING"] + ["DEBUG"] * (len(failed) - 1) == failed
    assert ("INFO", "aiopay_auth.recovered") in logs.events
    assert_no_secrets(fake, [*logs.lines, *(str(r) for r in results)])


async def test_payme_bad_credentials_are_retried_as_the_envelope_cannot_tell(
    fake_provider: FakeProviderFactory,
) -> None:
    # Pay-me answers bad credentials with HTTP 200 and success=false, the same
    # envelope it uses for outages: the SDK cannot tell them apart, so it keeps
    # retrying with backoff and waiters get the provider's message at the bound.
    fake = await fake_provider("payme")
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.1, wait_timeout=0.6)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake, client_secret="wrong"))
        with pytest.raises(TokenUnavailableError) as info:
            await holder.get()
    assert info.value.retryable
    assert "provider reported failure 01" in str(info.value)
    assert "provider_failure" == holder.health().last_error_kind
    assert fake.token_calls >= 3


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_connect_timeout_is_bounded_and_typed(dialect: Dialect) -> None:
    async with FakeProvider(dialect) as fake:
        with blackhole() as dead:
            where = {"app_url": dead} if dialect == "oro" else {"token_url": dead / "token"}
            profile = provider_for(fake, **where)
            policy = RefreshPolicy(
                fetch_timeout=0.2, backoff_initial=0.05, backoff_max=0.1, wait_timeout=0.7
            )
            async with TokenManager(policy=policy) as tokens:
                holder = tokens.add(profile)
                started = time.monotonic()
                with pytest.raises(TokenUnavailableError) as info:
                    await holder.get()
                assert time.monotonic() - started < 1.5
    assert info.value.retryable
    assert "timed out" in str(info.value)
    assert holder.health().failures_by_kind.get("timeout", 0) >= 2


@pytest.mark.parametrize("dialect", ["payme", "rfc6749"])
async def test_spent_refresh_token_falls_back_once_to_the_primary_grant(
    fake_provider: FakeProviderFactory, dialect: Dialect
) -> None:
    options: dict[str, Any] = {}
    if dialect == "rfc6749":
        options = {"username": "merchant@example.com", "password": "p@ss word:1"}
    fake = await fake_provider(dialect, lifetime=60)
    async with TokenManager(policy=POLICY) as tokens:
        holder = tokens.add(provider_for(fake, **options))
        first = await holder.get()
        assert first.refresh_token is not None
        # Another process spends our refresh token (the fake rotates them).
        fake.spend_refresh_token(first.refresh_token.reveal())
        assert holder.invalidate(first)
        second = await holder.get()
    assert second is not first
    assert second.refresh_token is not None
    # first fetch, the refused refresh, the primary grant: no loop.
    assert 3 == fake.token_calls
    assert 0 == holder.health().failures


async def test_refused_refresh_and_refused_primary_grant_do_not_loop(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("rfc6749", lifetime=60)
    options = {"username": fake.username, "password": fake.password}
    policy = RefreshPolicy(unhealable_retry=5, wait_timeout=2)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake, **options))
        first = await holder.get()
        assert first.refresh_token is not None
        fake.spend_refresh_token(first.refresh_token.reveal())
        fake.password = "changed-by-the-merchant"
        holder.invalidate(first)
        with pytest.raises(TokenUnavailableError, match="invalid_grant"):
            await holder.get()
        await anyio.sleep(0.3)
    assert 3 == fake.token_calls


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured_over_the_backoff(
    fake_provider: FakeProviderFactory, dialect: Dialect, form: str
) -> None:
    fake = await fake_provider(dialect, lifetime=60)
    # An HTTP-date has whole seconds: "two seconds ahead" names the start of
    # a second 1 to 2 s away, so the wait it asks for depends on the phase.
    # Derive it from the instant the date actually names.
    wall_started = time.time()
    value = "1" if form == "seconds" else _http_date(2)
    asked = 1.0
    if form == "http-date":
        named = email.utils.parsedate_to_datetime(value).timestamp()
        asked = named - wall_started
        assert 1.0 < asked < 2.01
    fake.queue(Scripted(status=429, headers={"Retry-After": value}))
    async with TokenManager(policy=POLICY) as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        elapsed = time.time() - wall_started
    # Never sooner than asked (5 ms allowed for the wall clock's slew against
    # the monotonic one the SDK sleeps on), and no whole second later than
    # asked: the wait is taken from the instant named, not rounded up or
    # counted twice.
    assert asked - 0.005 <= elapsed <= asked + RETRY_SLACK
    assert 2 == fake.token_calls
    assert {"throttled": 1} == holder.health().failures_by_kind


async def test_last_cause_carries_status_error_and_message(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("rfc6749")
    body = {"error": "temporarily_unavailable", "error_description": "maintenance window"}
    fake.queue(*[Scripted(status=503, json=body)] * 20)
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.1, wait_timeout=0.4)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake))
        with pytest.raises(TokenUnavailableError) as info:
            await holder.get()
    cause = info.value.last_error
    assert cause is not None
    assert 503 == getattr(cause, "status", None)
    assert "temporarily_unavailable" == getattr(cause, "error", None)
    assert "maintenance window" == getattr(cause, "description", None)
    assert "maintenance window" in str(info.value)


async def test_health_walks_through_its_states(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm", lifetime=1.0)
    fake.token_delay = 0.3
    policy = RefreshPolicy(backoff_initial=0.05, backoff_max=0.1)
    seen: list[str] = []
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake))
        seen.append(holder.state)
        await holder.get()
        seen.append(holder.state)
        await eventually(lambda: holder.fetching, within=2)
        seen.append(holder.state)
        # Every later call fails: degraded while the token lives, then failing.
        fake.fail_randomly(1.0, Scripted(status=502))
        await eventually(lambda: holder.state == "degraded", within=2)
        seen.append(holder.state)
        await eventually(lambda: holder.state == "failing", within=3)
        seen.append(holder.state)
        health = holder.health()
        assert health.consecutive_failures >= 1
        assert health.expires_in is not None
        assert health.expires_in <= 0
        fake.fail_randomly(0)
        await holder.get()
        seen.append(holder.state)
    seen.append(holder.state)
    assert ["starting", "fresh", "refreshing", "degraded", "failing", "fresh", "closed"] == seen
    assert {"server_error": holder.health().failures} == holder.health().failures_by_kind


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_token_response_is_refused(
    fake_provider: FakeProviderFactory, logs: Collect, chunked: bool
) -> None:
    fake = await fake_provider("cm")
    huge = {"access_token": "a" * 100_000, "expires_in": 60}
    fake.queue(Scripted(json=huge, chunked=chunked))
    async with TokenManager(policy=POLICY) as tokens:
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
    assert token.access_token in fake.issued_tokens  # the retry, not the huge one
    assert {"bad_response": 1} == holder.health().failures_by_kind
    assert any("is too large" in line for line in logs.lines)
