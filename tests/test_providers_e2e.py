"""Every provider dialect end to end, against its strict loopback fake."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from aiopay_auth import ConfigError, RefreshPolicy, TokenManager, TokenUnavailableError
from aiopay_auth.providers import oro, payme, vonage
from aiopay_auth.testing import Dialect, FakeProvider, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory

from .loopback import serve


pytestmark = pytest.mark.anyio

CASES: list[tuple[Dialect, dict[str, Any]]] = [
    ("cm", {}),
    ("vonage", {}),
    ("vonage", {"client_auth": "basic"}),
    ("payme", {}),
    ("payme", {"username": None, "password": None}),
    ("oro", {}),
    ("oro", {"application": "storefront"}),
    ("rfc6749", {}),
    ("rfc6749", {"client_auth": "body"}),
    ("rfc6749", {"username": "merchant@example.com", "password": "p@ss word:1"}),
]
IDS = [
    "cm",
    "vonage-body",
    "vonage-basic",
    "payme-password",
    "payme-client-credentials",
    "oro-backoffice",
    "oro-storefront",
    "rfc6749-basic",
    "rfc6749-body",
    "rfc6749-password",
]


def api_url(fake: FakeProvider, options: dict[str, Any]) -> str:
    base = fake.storefront_api_base if options.get("application") == "storefront" else fake.api_base
    return str(base / "payments" / "42")


@pytest.mark.parametrize(("dialect", "options"), CASES, ids=IDS)
async def test_first_fetch_refresh_before_expiry_and_401_recovery(
    fake_provider: FakeProviderFactory, dialect: Dialect, options: dict[str, Any]
) -> None:
    fake = await fake_provider(dialect, lifetime=1.0)
    url = api_url(fake, options)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake, **options))
        async with tokens.session(holder, limit=4) as http:
            # First fetch: the strict fake accepted the dialect's request.
            async with http.get(url) as resp:
                assert 200 == resp.status, fake.rejected
            assert 1 == fake.tokens_issued
            first = holder.current
            assert first is not None

            # Proactive refresh: a new token is published before the first
            # expires, so no request ever waits or is refused.
            deadline = time.monotonic() + 3.0
            while holder.current is first and time.monotonic() < deadline:
                async with http.get(url) as resp:
                    assert 200 == resp.status
            second = holder.current
            assert second is not None
            assert second is not first
            assert second.issued_at < first.expires_at

            # 401 recovery: the provider revokes every token; the next request
            # is refused once, refreshes and succeeds on the resend.
            fake.revoke_all()
            async with http.get(url) as resp:
                assert 200 == resp.status
            assert 1 == holder.health().recoveries
            assert 1 == holder.health().invalidations
    assert [] == fake.rejected
    assert 0 == fake.api_expired


async def test_payme_uses_refresh_token_and_keeps_the_rotated_one(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("payme", lifetime=0.6)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        first = holder.current
        assert first is not None
        assert first.refresh_token is not None
        seen = {first.refresh_token.reveal()}
        for _ in range(3):
            previous = holder.current
            deadline = time.monotonic() + 3
            while holder.current is previous and time.monotonic() < deadline:
                await holder.get()
                await anyio.sleep(0.02)
            current = holder.current
            assert current is not None
            assert current.refresh_token is not None
            seen.add(current.refresh_token.reveal())
    # Each refresh spent the previous refresh token and got a new one (the
    # fake rotates them and refuses a spent one), without falling back.
    assert 4 == len(seen)
    assert [] == fake.rejected
    assert 4 == fake.tokens_issued


async def test_refused_refresh_token_falls_back_to_the_password_grant(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("rfc6749", lifetime=30)
    profile = provider_for(
        fake,
        username=fake.username,
        password=fake.password,
        refresh_token="not-a-refresh-token-the-server-knows",
    )
    async with TokenManager() as tokens:
        holder = tokens.add(profile)
        token = await holder.get()
    assert token.refresh_token is not None
    assert 2 == fake.token_calls  # the refused refresh, then the password grant
    assert 2 == holder.health().fetches
    assert 0 == holder.health().failures


async def test_oro_tokens_are_stamped_only_on_their_own_api(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("oro", lifetime=30)
    async with TokenManager() as tokens:
        back = tokens.add(provider_for(fake))
        front = tokens.add(provider_for(fake, application="storefront"))
        async with tokens.session(back, front) as http:
            headers = {"Accept": "application/vnd.api+json"}
            async with http.get(str(fake.api_base / "orders"), headers=headers) as resp:
                assert 200 == resp.status
            assert back.current is not None
            assert fake.last_api_authorization == back.current.header
            async with http.get(str(fake.storefront_api_base / "orders"), headers=headers) as resp:
                assert 200 == resp.status
            assert front.current is not None
            assert fake.last_api_authorization == front.current.header
    assert 0 == fake.api_unauthorized


async def test_vonage_lower_case_token_type_and_basic_secret_encoding(
    fake_provider: FakeProviderFactory,
) -> None:
    # The fake's secret is "s3cret+/:%&=": it only survives HTTP Basic if
    # id and secret are form-encoded before base64 (RFC 6749 §2.3.1).
    fake = await fake_provider("vonage", lifetime=30)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake, client_auth="basic"))
        token = await holder.get()
    assert "bearer" == token.token_type
    assert token.header.startswith("Bearer ")
    assert [] == fake.rejected


async def test_wrong_secret_surfaces_at_once_to_waiters(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm")
    policy = RefreshPolicy(wait_timeout=20)
    async with TokenManager(policy=policy) as tokens:
        holder = tokens.add(provider_for(fake, client_secret="wrong"))
        started = time.monotonic()
        async with tokens.session(holder) as http:
            with pytest.raises(TokenUnavailableError, match="invalid_client") as info:
                await http.get(str(fake.api_base / "x"))
        assert time.monotonic() - started < 5  # not the 20 s wait bound
    assert info.value.retryable is False
    assert 1 == fake.token_calls
    assert 0 == fake.api_calls


async def test_requests_the_fake_would_reject_are_visible(
    fake_provider: FakeProviderFactory,
) -> None:
    # Sanity check of the strict fake: a CM request sent as JSON is refused.
    fake = await fake_provider("cm")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            str(fake.token_url),
            json={
                "grant_type": "client_credentials",
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
            },
        ) as resp,
    ):
        assert resp.status >= 400
    assert 1 == len(fake.rejected)


# ---------------------------------------------------------------------------
# Current vendor pages, played by independent loopback servers (tests/loopback.py)


async def test_payme_preproduction_speaks_the_current_version_and_audience() -> None:
    # Written from docs.pay-me.com/api-de-pagos/autenticacion (POST /token,
    # ALG-API-VERSION 1709847567, client_credentials) and the Nonce pages
    # (audience https://api.preprod.alignet.io/, bearer token on /nonce).
    issued: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/token":
            body = json.loads(await request.read())
            if (
                request.headers.get("ALG-API-VERSION") != "1709847567"
                or request.content_type != "application/json"
                or body.get("grant_type") != "client_credentials"
                or body.get("audience") != "https://api.preprod.alignet.io/"
                or (body.get("client_id"), body.get("client_secret")) != ("merchant", "s3cret")
            ):
                return web.json_response({"action": "authorize", "success": False})
            token = secrets.token_urlsafe(16)
            issued.add(token)
            return web.json_response(
                {
                    "action": "authorize",
                    "success": True,
                    "access_token": token,
                    "expires_in": 3600,
                    "token_type": "Bearer",
                    "authorization": {"meta": {"status": {"code": "00"}}},
                }
            )
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in issued:
            return web.json_response({"success": True})
        return web.json_response({"error": "invalid_token"}, status=401)

    async with serve(handler) as server:
        profile = payme.provider(
            environment="pre-production",
            client_id="merchant",
            client_secret="s3cret",
            token_url=server.url / "token",
            api=server.url / "nonce",
        )
        policy = RefreshPolicy(wait_timeout=5)
        async with TokenManager(policy=policy) as tokens:
            holder = tokens.add(profile)
            async with tokens.session(holder) as http, http.post(server.url / "nonce") as resp:
                assert 200 == resp.status
    assert ["/token", "/nonce"] == [seen.path for seen in server.seen]
    assert 0 == holder.health().failures


async def test_vonage_token_url_moved_alone_is_refused_before_any_call() -> None:
    # Written from VCC's "Resources (Authentication API)" page: one origin
    # serves /Auth/connect/token (form body, client credentials, scope
    # globalpci; token_type "bearer", expires_in 7200) and the APIs.
    issued: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/Auth/connect/token":
            form = await request.post()
            if (form.get("grant_type"), form.get("scope")) != ("client_credentials", "globalpci"):
                return web.json_response({"error": "invalid_request"}, status=400)
            token = secrets.token_urlsafe(16)
            issued.add(token)
            body = {"access_token": token, "expires_in": 7200, "token_type": "bearer"}
            return web.json_response(body)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in issued:
            return web.json_response({"ok": True})
        return web.json_response({"error": "invalid_token"}, status=401)

    async with serve(handler) as server:
        token_url = server.url / "Auth/connect/token"
        creds: dict[str, Any] = {"client_id": "vcc-client", "client_secret": "vcc-secret"}
        # Before: the profile was built, its token was fetched here, and the
        # Payment API calls to this origin went out bare and got 401s.
        refused = (
            r"\(not a VCC gateway\) and api https://emea\.cc\.vonage\.com "
            r"\(the emea cc gateway\) are on different gateways"
        )
        with pytest.raises(ConfigError, match=refused):
            vonage.provider(region="emea", token_url=token_url, **creds)
        assert [] == server.seen

        profile = vonage.provider(region="emea", token_url=token_url, api=server.url, **creds)
        async with TokenManager() as tokens:
            holder = tokens.add(profile)
            async with (
                tokens.session(holder) as http,
                http.post(server.url / "globalpci/v1/session") as resp,
            ):
                assert 200 == resp.status
    assert ["/Auth/connect/token", "/globalpci/v1/session"] == [s.path for s in server.seen]
    assert 0 == holder.health().recoveries


async def test_oro_storefront_customer_user_password_grant_and_refresh() -> None:
    # Written from doc.oroinc.com "Password Grant Type: Generate Token" and
    # "Password Grant Type: Refresh Token" (JSON bodies to /oauth2-token; a
    # refresh token with each access token), and the storefront API at /api.
    user_login = ("buyer@example.com", "pw 1")
    grants: list[str] = []
    refresh_tokens: set[str] = set()
    issued: set[str] = set()

    def issue() -> web.Response:
        access, refresh = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        issued.add(access)
        refresh_tokens.add(refresh)
        body = {
            "token_type": "Bearer",
            "expires_in": 1,
            "access_token": access,
            "refresh_token": refresh,
        }
        return web.json_response(body)

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/oauth2-token":
            body = json.loads(await request.read())
            grants.append(body.get("grant_type"))
            client_ok = (body.get("client_id"), body.get("client_secret")) == ("shop", "s3cret")
            user = (body.get("username"), body.get("password"))
            if client_ok and body.get("grant_type") == "password" and user == user_login:
                return issue()
            spent = body.get("refresh_token")
            if client_ok and body.get("grant_type") == "refresh_token" and spent in refresh_tokens:
                refresh_tokens.discard(spent)
                return issue()
            return web.json_response({"error": "invalid_grant"}, status=400)
        if request.path.startswith("/api/") and (
            request.headers.get("Authorization", "").removeprefix("Bearer ") in issued
        ):
            return web.json_response({"data": []})
        return web.json_response({"error": "invalid_token"}, status=401)

    async with serve(handler) as server:
        profile = oro.provider(
            app_url=server.url,
            client_id="shop",
            client_secret="s3cret",
            application="storefront",
            username=user_login[0],
            password=user_login[1],
        )
        async with TokenManager() as tokens:
            holder = tokens.add(profile)
            headers = {"Accept": oro.API_ACCEPT}
            async with (
                tokens.session(holder, headers=headers) as http,
                http.get(server.url / "api/products") as resp,
            ):
                assert 200 == resp.status
            first = holder.current
            deadline = time.monotonic() + 5
            while holder.current is first and time.monotonic() < deadline:
                await holder.get()
                await anyio.sleep(0.05)
            assert holder.current is not first
    assert ["password", "refresh_token"] == grants[:2]
    assert 0 == holder.health().failures
