"""Logs are structured, silent by default, and never carry a secret or a token."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import structlog

from aiopay_auth import (
    AuthError,
    RefreshPolicy,
    Secret,
    Token,
    TokenHolder,
    TokenManager,
    TokenSource,
    TokenUnavailableError,
    build_token_request,
    use_structlog,
)
from aiopay_auth.testing import FakeProvider, Scripted, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory


pytestmark = pytest.mark.anyio


def secrets_of(*fakes: FakeProvider) -> set[str]:
    found: set[str] = set()
    for fake in fakes:
        found |= {fake.client_secret, fake.password}
        found |= fake.issued_tokens | fake.issued_refresh_tokens
    return found


async def exercise(fake_provider: FakeProviderFactory) -> tuple[list[str], set[str]]:
    """Run fetches, refreshes, 401s and failures; return every text a user could see."""
    texts: list[str] = []
    cm = await fake_provider("cm", lifetime=0.5)
    payme = await fake_provider("payme", lifetime=0.5)
    policy = RefreshPolicy(backoff_initial=0.01, backoff_max=0.02, wait_timeout=2)
    async with TokenManager(policy=policy) as tokens:
        good = tokens.add(provider_for(cm))
        bad = tokens.add(provider_for(cm, name="cm-bad", client_secret="wrong-" + cm.client_secret))
        pay = tokens.add(provider_for(payme))
        async with tokens.session(good, pay) as http:
            for _ in range(3):
                async with http.get(cm.api_base / "x") as resp:
                    assert 200 == resp.status
                async with http.get(payme.api_base / "charges") as resp:
                    assert 200 == resp.status
            cm.revoke_all()
            payme.revoke_all()
            async with http.get(cm.api_base / "x") as resp:
                assert 200 == resp.status
            payme.queue(
                Scripted(
                    json={
                        "success": False,
                        "authorization": {
                            "meta": {
                                "status": {
                                    "code": "01",
                                    "message_ilgn": [
                                        {"locale": "es_PE", "value": "bad " + payme.client_secret}
                                    ],
                                }
                            }
                        },
                    }
                )
            )
            async with http.get(payme.api_base / "charges") as resp:
                assert 200 == resp.status
        with pytest.raises(TokenUnavailableError) as info:
            await bad.get()
        texts += [str(info.value), repr(info.value), str(info.value.last_error)]
        for holder in (good, bad, pay):
            texts += [
                repr(holder),
                repr(holder.current),
                repr(holder.provider),
                repr(holder.health()),
                repr(holder.last_error),
            ]
            texts += [str(holder.last_error)]
    return texts, secrets_of(cm, payme)


async def test_no_secret_in_logs_reprs_or_errors(
    fake_provider: FakeProviderFactory, records: list[logging.LogRecord]
) -> None:
    texts, secrets = await exercise(fake_provider)
    events = {getattr(r, "aiopay_auth", {}).get("event") for r in records}
    assert {"aiopay_auth.token_fetched", "aiopay_auth.fetch_failed"} <= events
    for record in records:
        texts += [record.getMessage(), repr(getattr(record, "aiopay_auth", None))]
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    blob = "\n".join(texts)
    assert len(secrets) > 6
    leaked = sorted(s for s in secrets if s in blob)
    assert [] == leaked


async def test_structlog_opt_in_routes_events_through_structlog(
    fake_provider: FakeProviderFactory,
) -> None:
    use_structlog()
    try:
        with structlog.testing.capture_logs() as logs:
            texts, secrets = await exercise(fake_provider)
    finally:
        use_structlog(enabled=False)
    names = {entry["event"] for entry in logs}
    assert "aiopay_auth.token_fetched" in names
    fetched = next(e for e in logs if e["event"] == "aiopay_auth.token_fetched")
    assert len(fetched["fingerprint"]) == 12
    blob = repr(logs) + "\n".join(texts)
    assert [] == sorted(s for s in secrets if s in blob)


def test_silent_when_the_application_configured_nothing() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from aiopay_auth import TokenManager, RefreshPolicy
        from aiopay_auth.testing import FakeProvider, provider_for

        async def main():
            async with FakeProvider("cm", lifetime=0.3) as fake:
                async with TokenManager(policy=RefreshPolicy(wait_timeout=1)) as tokens:
                    tokens.add(provider_for(fake, name="bad", client_secret="nope"))
                    holder = tokens.add(provider_for(fake))
                    await holder.get()
                    await asyncio.sleep(0.8)

        asyncio.run(main())
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == done.returncode, done.stderr
    assert "" == done.stdout
    assert "" == done.stderr


async def test_a_crash_is_logged_without_locals_even_by_a_renderer_that_shows_them(
    fake_provider: FakeProviderFactory, records: list[logging.LogRecord]
) -> None:
    # A common production setup: tracebacks as dicts, frame locals shown.
    secret = "client secret with spaces 42"
    fake = await fake_provider("cm", client_secret=secret)
    calls = 0

    class Crashing:
        def __init__(self, holder: TokenHolder, inner: TokenSource) -> None:
            self.holder, self.inner = holder, inner

        async def fetch(self, refresh_token: Secret | None) -> Token:
            nonlocal calls
            calls += 1
            request = build_token_request(self.holder.provider, refresh_token=refresh_token)
            body = request.body  # holds the secrets: a local a renderer would print
            if calls == 1:
                msg = f"bug while sending {len(body)} bytes with {secret}"
                raise RuntimeError(msg)
            return await self.inner.fetch(refresh_token)

    old = structlog.get_config()
    capture = structlog.testing.LogCapture()
    transformer = structlog.tracebacks.ExceptionDictTransformer(
        show_locals=True, locals_max_string=10_000
    )
    structlog.configure(
        processors=[structlog.processors.ExceptionRenderer(transformer), capture],
        cache_logger_on_first_use=False,
    )
    policy = RefreshPolicy(backoff_initial=0.01, backoff_max=0.02)
    profile = provider_for(fake, name="crashy")
    try:
        for structured in (True, False):
            use_structlog(structured)
            calls = 0
            async with TokenManager(policy=policy, token_source=Crashing) as tokens:
                await tokens.add(profile).get()
    finally:
        use_structlog(enabled=False)
        structlog.configure(**old)
    records = [r for r in records if "refresher_crashed" in r.getMessage()]
    blob = repr(capture.entries) + "\n".join(r.getMessage() for r in records)
    assert secret not in blob
    assert "client secret" not in blob
    crashes = [e for e in capture.entries if e["event"] == "aiopay_auth.refresher_crashed"]
    assert 1 == len(crashes)
    crash = crashes[0]
    assert "builtins.RuntimeError" == crash["exc_type"]
    assert "[redacted]" in crash["exc_message"]
    assert any("in fetch" in frame for frame in crash["stack"])
    assert "exc_info" not in crash
    assert "exception" not in crash
    assert 1 == len(records)
    assert records[0].exc_info is None


async def test_an_error_chain_formatted_with_locals_carries_no_secret() -> None:
    # A raw endpoint that drops every connection after reading the request:
    # aiohttp fails inside frames whose locals hold the request body. An
    # application logging the TokenUnavailableError with locals shown (or
    # any renderer walking __cause__) must still print no secret.
    import traceback

    from aiopay_auth._oauth import basic_credentials

    from .endpoints import CLIENT_ID, CLIENT_SECRET, RawEndpoint, make_provider

    raw = RawEndpoint()
    raw.abort = True
    await raw.start()
    try:
        async with TokenManager() as tokens:
            holder = tokens.add(make_provider(raw.base))
            with pytest.raises(TokenUnavailableError) as caught:
                await holder.get(timeout=0.5)
    finally:
        await raw.stop()
    err = caught.value
    assert isinstance(err.__cause__, AuthError)  # the chain is there to walk
    # aiohttp's error is not chained (its message and repr may quote secrets).
    assert err.__cause__.__cause__ is None
    assert err.__cause__.__context__ is None
    # From the last failure down (this test's own frame holds the secret).
    shown = "".join(
        traceback.TracebackException.from_exception(err.__cause__, capture_locals=True).format()
    )
    assert "ServerDisconnected" in shown
    assert CLIENT_SECRET not in shown
    # The provider authenticates with HTTP Basic: the header is a secret too.
    assert basic_credentials(CLIENT_ID, CLIENT_SECRET).removeprefix("Basic ") not in shown
