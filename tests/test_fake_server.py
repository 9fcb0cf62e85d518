"""Tests for the loopback fake provider (``aiopay_auth.testing._server``)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from yarl import URL

from aiopay_auth.testing._server import Dialect, FakeProvider, Scripted

from .helpers import ManualClock, eventually


pytestmark = pytest.mark.anyio

PAYME_HEADERS = {"ALG-API-VERSION": "1618440906"}


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(client_id: str, client_secret: str, *, encode: bool = True) -> str:
    """An HTTP Basic value, form-encoding the parts as RFC 6749 §2.3.1 requires."""
    if encode:
        client_id, client_secret = quote_plus(client_id), quote_plus(client_secret)
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def cc_form(provider: FakeProvider, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
    }
    form.update(extra)
    return form


def payme_body(provider: FakeProvider, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "authorize",
        "grant_type": "password",
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "audience": provider.audience,
        "username": provider.username,
        "password": provider.password,
        "scope": "create:token post:charges offline_access",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


async def post_form(
    session: aiohttp.ClientSession,
    url: URL,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.post(url, data=form, headers=headers) as response:
        return response.status, await response.json()


async def post_json(
    session: aiohttp.ClientSession,
    url: URL,
    body: object,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def call_api(session: aiohttp.ClientSession, url: URL, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(url, headers=headers) as response:
        await response.read()
        return response.status


def assert_no_secrets(provider: FakeProvider) -> None:
    for reason in provider.rejected:
        assert provider.client_secret not in reason
        assert provider.password not in reason
        for token in provider.issued_tokens | provider.issued_refresh_tokens:
            assert token not in reason


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize(
    ("dialect", "token_path", "api_path"),
    [
        ("cm", "/api/v1/authorization/oauth2/token", "/api/v1"),
        ("vonage", "/auth/connect/token", "/payment-api"),
        ("payme", "/token", "/v1"),
        ("oro", "/oauth2-token", "/admin/api"),
        ("rfc6749", "/oauth/token", "/api"),
    ],
)
async def test_urls_per_dialect(dialect: Any, token_path: str, api_path: str) -> None:
    async with FakeProvider(dialect) as provider:
        assert provider.base_url.host == "127.0.0.1"
        assert provider.base_url.port == provider.port
        assert provider.port > 0
        assert provider.token_url == provider.base_url.with_path(token_path)
        assert provider.api_base == provider.base_url.with_path(api_path)
        if dialect == "oro":
            assert provider.storefront_api_base.path == "/api"
        else:
            with pytest.raises(AttributeError):
                _ = provider.storefront_api_base


async def test_lifecycle_start_close_idempotent(session: aiohttp.ClientSession) -> None:
    provider = FakeProvider("cm")
    with pytest.raises(RuntimeError):
        _ = provider.base_url
    await provider.close()  # closing a never-started provider is harmless
    provider = FakeProvider("cm")
    await provider.start()
    with pytest.raises(RuntimeError):
        await provider.start()
    url = provider.token_url
    await provider.close()
    await provider.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_form(session, url, cc_form(provider))


def test_unknown_dialect_rejected() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        FakeProvider("github")  # type: ignore[arg-type]


def test_scripted_validation() -> None:
    with pytest.raises(ValueError, match="json or body"):
        Scripted(json={}, body="x")
    with pytest.raises(ValueError, match="delay"):
        Scripted(delay=-1)
    with pytest.raises(ValueError, match="status"):
        Scripted(status=42)
    assert Scripted().status == 200


# --------------------------------------------------------------------------- cm


async def test_cm_issues_token_and_api_accepts_it(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        status, body = await post_form(
            session, provider.token_url, cc_form(provider), {"Accept": "application/json"}
        )
        assert status == 200
        assert set(body) == {"access_token", "expires_in", "token_type"}
        assert body["expires_in"] == 3600 and isinstance(body["expires_in"], int)
        assert body["token_type"] == "Bearer"
        assert body["access_token"] in provider.issued_tokens
        url = provider.api_base / "paymentmethods/checkout/v1/transactions"
        async with session.post(
            url, headers={"Authorization": f"Bearer {body['access_token']}"}, json={}
        ) as response:
            assert response.status == 200
            assert await response.json() == {"ok": True, "path": url.path}
        assert provider.last_api_authorization == f"Bearer {body['access_token']}"
        assert (provider.token_calls, provider.tokens_issued, provider.api_calls) == (1, 1, 1)
        assert provider.api_unauthorized == 0
        assert provider.rejected == []


async def test_cm_rejections(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        url = provider.token_url
        # JSON instead of a form
        status, body = await post_json(session, url, cc_form(provider))
        assert (status, body["error"]) == (415, "invalid_request")
        # Accept that excludes JSON
        status, body = await post_form(session, url, cc_form(provider), {"Accept": "text/html"})
        assert status == 406
        status, _ = await post_form(
            session, url, cc_form(provider), {"Accept": "application/json;q=0, text/html"}
        )
        assert status == 406
        # missing secret, wrong secret, wrong client, wrong grant
        form = cc_form(provider)
        del form["client_secret"]
        status, body = await post_form(session, url, form)
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await post_form(session, url, cc_form(provider, client_secret="nope"))
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await post_form(session, url, cc_form(provider, client_id="other"))
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await post_form(session, url, cc_form(provider, grant_type="password"))
        assert (status, body["error"]) == (400, "unsupported_grant_type")
        # cm takes credentials only in the body
        status, body = await post_form(
            session,
            url,
            {"grant_type": "client_credentials"},
            {"Authorization": basic(provider.client_id, provider.client_secret)},
        )
        assert (status, body["error"]) == (400, "invalid_request")
        # repeated parameter
        async with session.post(
            url,
            data="grant_type=client_credentials&grant_type=client_credentials&client_id=a",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as response:
            assert response.status == 400
        # GET on the token path is the token endpoint (405), not the protected API (401)
        async with session.get(url) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
        assert provider.token_calls == 10
        assert provider.tokens_issued == 0
        assert provider.api_calls == 0
        assert len(provider.rejected) == 10
        assert_no_secrets(provider)
        # Accept wildcards are fine
        for accept in ("*/*", "application/*", "text/html, application/json;q=0.5"):
            status, _ = await post_form(session, url, cc_form(provider), {"Accept": accept})
            assert status == 200, accept


# --------------------------------------------------------------------------- vonage


async def test_vonage_body_and_basic_credentials(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("vonage") as provider:
        url = provider.token_url
        status, body = await post_form(session, url, cc_form(provider, scope="globalpci"))
        assert status == 200
        assert body["token_type"] == "bearer"
        assert "refresh_token" not in body
        assert await call_api(session, provider.api_base / "payments", body["access_token"]) == 200

        # Basic with form-encoded id and secret; client_id may be repeated in the body
        auth = {"Authorization": basic(provider.client_id, provider.client_secret)}
        form = {"grant_type": "client_credentials", "scope": "users:read globalpci"}
        status, body = await post_form(session, url, form, auth)
        assert status == 200, body
        status, body = await post_form(
            session, url, {**form, "client_id": provider.client_id}, auth
        )
        assert status == 200, body
        assert provider.tokens_issued == 3


async def test_vonage_rejections(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("vonage") as provider:
        url = provider.token_url
        status, body = await post_form(session, url, cc_form(provider))
        assert (status, body["error"]) == (400, "invalid_scope")
        status, body = await post_form(session, url, cc_form(provider, scope="users:read"))
        assert (status, body["error"]) == (400, "invalid_scope")
        form = {"grant_type": "client_credentials", "scope": "globalpci"}
        # secret not form-encoded before base64: "+" decodes to a space -> wrong secret
        raw = {"Authorization": basic(provider.client_id, provider.client_secret, encode=False)}
        status, body = await post_form(session, url, form, raw)
        assert (status, body["error"]) == (401, "invalid_client")
        assert "Basic" in (await _www_authenticate(session, url, form, raw))
        # credentials both in body and Basic
        auth = {"Authorization": basic(provider.client_id, provider.client_secret)}
        status, body = await post_form(session, url, cc_form(provider, scope="globalpci"), auth)
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await post_form(session, url, {**form, "client_id": "other"}, auth)
        assert (status, body["error"]) == (400, "invalid_request")
        # malformed Basic values
        for value in ("Basic !!!not-base64", "Basic " + base64.b64encode(b"nocolon").decode()):
            status, body = await post_form(session, url, form, {"Authorization": value})
            assert (status, body["error"]) == (401, "invalid_client")
        # refresh tokens are not issued by default, so a made-up one is invalid
        refresh = cc_form(
            provider, grant_type="refresh_token", refresh_token="x", scope="globalpci"
        )
        status, body = await post_form(session, url, refresh)
        assert (status, body["error"]) == (400, "invalid_grant")
        assert provider.tokens_issued == 0
        assert_no_secrets(provider)


async def _www_authenticate(
    session: aiohttp.ClientSession, url: URL, form: dict[str, str], headers: dict[str, str]
) -> str:
    async with session.post(url, data=form, headers=headers) as response:
        return response.headers.get("WWW-Authenticate", "")


async def test_vonage_password_grant(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("vonage") as provider:
        form = cc_form(
            provider,
            grant_type="password",
            username=provider.username,
            password=provider.password,
            scope="globalpci",
        )
        status, body = await post_form(session, provider.token_url, form)
        assert status == 200 and "refresh_token" not in body
        status, body = await post_form(session, provider.token_url, {**form, "password": "bad"})
        assert (status, body["error"]) == (400, "invalid_grant")


# --------------------------------------------------------------------------- rfc6749


async def test_rfc6749_password_refresh_rotation(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("rfc6749") as provider:
        url = provider.token_url
        auth = {"Authorization": basic(provider.client_id, provider.client_secret)}
        status, body = await post_form(session, url, {"grant_type": "client_credentials"}, auth)
        assert status == 200 and "refresh_token" not in body

        password = {
            "grant_type": "password",
            "username": provider.username,
            "password": provider.password,
        }
        status, body = await post_form(session, url, password, auth)
        assert status == 200
        first_refresh = body["refresh_token"]
        assert first_refresh in provider.issued_refresh_tokens

        refresh = {"grant_type": "refresh_token", "refresh_token": first_refresh}
        status, body = await post_form(session, url, refresh, auth)
        assert status == 200
        second_refresh = body["refresh_token"]
        assert second_refresh != first_refresh
        assert await call_api(session, provider.api_base / "x", body["access_token"]) == 200

        # the first one is spent
        status, body = await post_form(session, url, refresh, auth)
        assert (status, body["error"]) == (400, "invalid_grant")
        # bad password
        status, body = await post_form(session, url, {**password, "password": "wrong"}, auth)
        assert (status, body["error"]) == (400, "invalid_grant")
        # missing username
        status, body = await post_form(session, url, {"grant_type": "password"}, auth)
        assert (status, body["error"]) == (400, "invalid_request")
        assert provider.tokens_issued == 3
        assert_no_secrets(provider)


async def test_rfc6749_refresh_options(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(
        "rfc6749", issue_refresh_tokens=True, rotate_refresh_tokens=False
    ) as provider:
        status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert status == 200
        refresh_token = body["refresh_token"]
        form = cc_form(provider, grant_type="refresh_token", refresh_token=refresh_token)
        for _ in range(2):  # not rotated: reusable, and no new one handed out
            status, body = await post_form(session, provider.token_url, form)
            assert status == 200 and "refresh_token" not in body
    async with FakeProvider("rfc6749", issue_refresh_tokens=False) as provider:
        form = cc_form(
            provider, grant_type="password", username=provider.username, password=provider.password
        )
        status, body = await post_form(session, provider.token_url, form)
        assert status == 200 and "refresh_token" not in body


# --------------------------------------------------------------------------- payme


async def test_payme_password_grant_envelope(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("payme", lifetime=86400) as provider:
        status, body = await post_json(
            session, provider.token_url, payme_body(provider), PAYME_HEADERS
        )
        assert status == 200
        assert body["success"] is True
        assert body["action"] == "authorize"
        assert body["expires_in"] == 86400
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "create:token post:charges offline_access"
        assert body["authorization"]["meta"]["status"]["code"] == "00"
        assert body["refresh_token"] in provider.issued_refresh_tokens
        assert await call_api(session, provider.api_base / "charges", body["access_token"]) == 200

        # refresh rotates; the spent token then gets an OAuth invalid_grant with HTTP 400
        refresh = payme_body(
            provider,
            grant_type="refresh_token",
            refresh_token=body["refresh_token"],
            password=None,
        )
        status, renewed = await post_json(session, provider.token_url, refresh, PAYME_HEADERS)
        assert status == 200 and renewed["success"] is True
        assert renewed["refresh_token"] != body["refresh_token"]
        status, spent = await post_json(session, provider.token_url, refresh, PAYME_HEADERS)
        assert status == 400
        assert spent == {"error": "invalid_grant", "error_description": "refresh token is invalid"}

        # without offline_access: no refresh token; client_credentials grant works too
        status, body = await post_json(
            session,
            provider.token_url,
            payme_body(provider, scope="post:charges", grant_type="client_credentials"),
            PAYME_HEADERS,
        )
        assert status == 200 and body["success"] is True and "refresh_token" not in body


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_secret": "wrong"},
        {"client_id": "nobody"},
        {"password": "wrong"},
        {"password": None},
        {"action": "charge"},
        {"audience": "https://api.alignet.io"},
        {"scope": None},
        {"scope": "create:token read:everything"},
        {"grant_type": "authorization_code"},
        {"client_secret": 12345},
    ],
)
async def test_payme_failures_are_http_200_envelopes(
    session: aiohttp.ClientSession, overrides: dict[str, Any]
) -> None:
    async with FakeProvider("payme") as provider:
        body = payme_body(provider, **overrides)
        status, answer = await post_json(session, provider.token_url, body, PAYME_HEADERS)
        assert status == 200
        assert answer["success"] is False
        assert "access_token" not in answer
        meta = answer["authorization"]["meta"]["status"]
        assert meta["code"] == "01"
        assert meta["message_ilgn"][0]["locale"] == "es_PE"
        assert provider.tokens_issued == 0
        assert len(provider.rejected) == 1
        assert_no_secrets(provider)


async def test_payme_transport_rejections(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("payme") as provider:
        url = provider.token_url
        status, body = await post_json(session, url, payme_body(provider))  # no version header
        assert status == 400 and body["success"] is False
        status, body = await post_json(session, url, payme_body(provider), {"ALG-API-VERSION": "1"})
        assert status == 400 and body["success"] is False
        async with session.post(url, data=payme_body(provider), headers=PAYME_HEADERS) as response:
            assert response.status == 415
        async with session.post(
            url,
            data=b"{not json",
            headers={**PAYME_HEADERS, "Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
        status, body = await post_json(
            session,
            url,
            payme_body(provider, grant_type="refresh_token", refresh_token="unknown"),
            PAYME_HEADERS,
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        assert provider.token_calls == 5 and provider.tokens_issued == 0


# --------------------------------------------------------------------------- oro


async def test_oro_backoffice_and_storefront_not_interchangeable(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeProvider("oro") as provider:
        status, backoffice = await post_json(session, provider.token_url, cc_form(provider))
        assert status == 200 and backoffice["token_type"] == "Bearer"
        status, storefront = await post_json(
            session, provider.token_url, cc_form(provider, client_id=provider.storefront_client_id)
        )
        assert status == 200
        admin_url = provider.api_base / "users"
        store_url = provider.storefront_api_base / "products"
        assert await call_api(session, admin_url, backoffice["access_token"]) == 200
        assert await call_api(session, store_url, storefront["access_token"]) == 200
        assert await call_api(session, admin_url, storefront["access_token"]) == 401
        assert await call_api(session, store_url, backoffice["access_token"]) == 401
        assert provider.api_unauthorized == 2 and provider.api_expired == 0


async def test_oro_rejections(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("oro") as provider:
        url = provider.token_url
        status, body = await post_form(session, url, cc_form(provider))
        assert (status, body["error"]) == (415, "invalid_request")
        status, body = await post_json(session, url, cc_form(provider, client_secret="x"))
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await post_json(session, url, cc_form(provider, grant_type="password"))
        assert (status, body["error"]) == (400, "unsupported_grant_type")
        status, body = await post_json(session, url, ["grant_type", "client_credentials"])
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await post_json(session, url, {"grant_type": "client_credentials"})
        assert (status, body["error"]) == (400, "invalid_request")
        assert provider.tokens_issued == 0 and len(provider.rejected) == 5


# --------------------------------------------------------------------------- protected API


async def test_api_rejects_missing_unknown_expired_and_revoked(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeProvider("rfc6749", lifetime=0.2) as provider:
        status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert status == 200
        assert body["expires_in"] == pytest.approx(0.2)  # fractional lifetime sent as-is
        token = body["access_token"]
        url = provider.api_base / "thing"

        async with session.get(url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert await call_api(session, url, "made-up") == 401
        async with session.get(url, headers={"Authorization": f"Basic {token}"}) as response:
            assert response.status == 401
        assert await call_api(session, url, token) == 200
        assert provider.api_expired == 0

        await asyncio.sleep(0.25)
        assert await call_api(session, url, token) == 401
        assert provider.api_expired == 1

        provider.lifetime = 60
        status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert body["expires_in"] == 60
        fresh = body["access_token"]
        assert await call_api(session, provider.api_base, fresh) == 200  # the base itself
        provider.revoke_all()
        assert await call_api(session, url, fresh) == 401
        assert provider.api_expired == 1  # revoked is not expired
        assert provider.api_calls == 7
        assert provider.api_unauthorized == 5
        assert provider.last_api_authorization == f"Bearer {fresh}"
        # the unprotected helpers and other paths are not the API
        async with session.get(provider.base_url / "elsewhere") as response:
            assert response.status == 404
        assert provider.api_calls == 7


@pytest.mark.parametrize("lifetime", [2.2, 0.2, 1.5, 1, 3600.0, 86400.25])
@pytest.mark.parametrize("dialect", ["cm", "payme"])
async def test_enforced_expiry_is_exactly_the_reported_expires_in(
    session: aiohttp.ClientSession, dialect: Dialect, lifetime: float
) -> None:
    # The fake is the ground truth of every "0 expired" figure: the token must
    # die at issue time + the very number the answer reported, not a rounded one.
    clock = ManualClock()
    async with FakeProvider(dialect, lifetime=lifetime, clock=clock) as provider:
        if dialect == "payme":
            status, body = await post_json(
                session, provider.token_url, payme_body(provider), headers=PAYME_HEADERS
            )
        else:
            status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert status == 200
        reported = body["expires_in"]
        assert reported == lifetime
        assert isinstance(reported, int) == float(lifetime).is_integer()
        token, url = body["access_token"], provider.api_base / "thing"
        issued = clock.now
        clock.now = math.nextafter(issued + reported, 0.0)  # the last instant it lives
        assert await call_api(session, url, token) == 200
        clock.now = issued + reported
        assert await call_api(session, url, token) == 401
        assert (provider.api_expired, provider.api_unauthorized) == (1, 1)


async def test_reset_counters(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        _, body = await post_form(session, provider.token_url, cc_form(provider))
        await post_form(session, provider.token_url, cc_form(provider, client_secret="x"))
        await call_api(session, provider.api_base / "a", None)
        provider.reset_counters()
        assert (provider.token_calls, provider.tokens_issued, provider.api_calls) == (0, 0, 0)
        assert (provider.api_unauthorized, provider.api_expired, provider.rejected) == (0, 0, [])
        # tokens survive a counter reset
        assert await call_api(session, provider.api_base / "a", body["access_token"]) == 200


async def test_api_handles_many_concurrent_requests() -> None:
    async with FakeProvider("cm") as provider:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:
            _, body = await post_form(session, provider.token_url, cc_form(provider))
            url = provider.api_base / "hot"
            statuses = await asyncio.gather(
                *(call_api(session, url, body["access_token"]) for _ in range(2000))
            )
        assert statuses == [200] * 2000
        assert provider.api_calls == 2000 and provider.api_unauthorized == 0


# --------------------------------------------------------------------------- scripted


async def test_scripted_responses_fifo(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        provider.queue(
            Scripted(
                status=503,
                body="<html>down</html>",
                headers={"Retry-After": "2", "Content-Type": "text/html"},
            ),
            Scripted(json={"access_token": "abc", "expires_in": "3600"}),
            Scripted(body=b'{"access_token": "tru'),
        )
        url = provider.token_url
        async with session.post(url, data=cc_form(provider)) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "2"
            assert response.content_type == "text/html"
            assert await response.text() == "<html>down</html>"
        async with session.post(url, data={}) as response:  # not validated
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.json() == {"access_token": "abc", "expires_in": "3600"}
        async with session.post(url, data=cc_form(provider)) as response:
            assert response.content_type == "text/plain"
            with pytest.raises(json.JSONDecodeError):
                json.loads(await response.read())
        # queue exhausted: normal handling again
        status, _ = await post_form(session, url, cc_form(provider))
        assert status == 200
        assert provider.token_calls == 4
        assert provider.tokens_issued == 1
        assert provider.rejected == []
        # a scripted access token is not known to the API
        assert await call_api(session, provider.api_base / "x", "abc") == 401


async def test_scripted_delay_and_drop(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        provider.queue(Scripted(delay=0.3, json={"slow": True}), Scripted(drop=True))
        started = time.monotonic()
        status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert time.monotonic() - started >= 0.29
        assert (status, body) == (200, {"slow": True})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post_form(session, provider.token_url, cc_form(provider))
        timeout = aiohttp.ClientTimeout(total=0.1)
        provider.queue(Scripted(delay=5))
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(provider.token_url, timeout=timeout):
                pass
        assert provider.token_calls == 3


async def test_close_cuts_scripted_delay_short(session: aiohttp.ClientSession) -> None:
    provider = FakeProvider("cm")
    await provider.start()
    provider.queue(Scripted(delay=30, json={"late": True}))
    request = asyncio.ensure_future(post_form(session, provider.token_url, cc_form(provider)))
    for _ in range(500):  # wait until the request is parked in the scripted delay
        if provider.token_calls:
            break
        await asyncio.sleep(0.01)
    assert provider.token_calls == 1
    started = time.monotonic()
    await provider.close()
    assert time.monotonic() - started < 0.3  # did not wait for the delay nor a grace period
    with pytest.raises(aiohttp.ServerDisconnectedError):  # dropped, not answered
        await request


# --------------------------------------------------------------------------- helpers


async def test_redirect_and_echo_headers(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        target = "http://elsewhere.invalid/steal"
        redirect = (provider.base_url / "redirect").with_query(to=target)
        async with session.get(redirect, allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == target
        async with session.get(
            redirect.update_query(status="307"), allow_redirects=False
        ) as response:
            assert response.status == 307
        async with session.get(provider.base_url / "redirect") as response:
            assert response.status == 400
        async with session.get(
            provider.base_url / "echo-headers", headers={"X-Probe": "1", "Authorization": "t"}
        ) as response:
            echoed = await response.json()
        assert echoed["x-probe"] == "1"
        assert echoed["authorization"] == "t"
        assert provider.api_calls == 0 and provider.token_calls == 0


# --------------------------------------------------------------------------- many clients


async def test_many_clients_are_accepted_and_counted_per_client(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeProvider("rfc6749") as provider:
        clients = [provider.add_client() for _ in range(3)] + [provider.add_client("m-9", "s9")]
        assert ("m-9", "s9") == clients[-1]
        assert ["merchant-1", "merchant-2", "merchant-3"] == [c for c, _ in clients[:3]]
        assert len({s for _, s in clients}) == 4
        tokens = {}
        for client_id, secret in clients:
            form = {"grant_type": "client_credentials", "client_id": client_id}
            status, body = await post_form(
                session, provider.token_url, {**form, "client_secret": secret}
            )
            assert 200 == status
            tokens[client_id] = body["access_token"]
        status, body = await post_form(session, provider.token_url, cc_form(provider))
        assert 200 == status  # the default client still works
        wrong = cc_form(provider, client_id="m-9", client_secret=clients[0][1])
        assert 401 == (await post_form(session, provider.token_url, wrong))[0]
        for _ in range(2):
            assert 200 == await call_api(session, provider.api_base / "x", tokens["m-9"])
        assert 200 == await call_api(session, provider.api_base / "x", tokens["merchant-1"])
        assert {
            "merchant-1": 1,
            "merchant-2": 1,
            "merchant-3": 1,
            "m-9": 2,
            provider.client_id: 1,
        } == provider.token_calls_by_client
        assert {"m-9": 2, "merchant-1": 1} == provider.api_calls_by_client
        provider.reset_counters()
        assert ({}, {}) == (provider.token_calls_by_client, provider.api_calls_by_client)


async def test_a_second_secret_is_accepted_until_removed(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cm") as provider:
        client_id, old = provider.add_client()
        _, new = provider.add_client(client_id)

        async def status(secret: str) -> int:
            form = cc_form(provider, client_id=client_id, client_secret=secret)
            return (await post_form(session, provider.token_url, form))[0]

        assert (200, 200) == (await status(old), await status(new))
        assert provider.remove_client(client_id, old)
        assert not provider.remove_client(client_id, old)
        assert (401, 200) == (await status(old), await status(new))
        assert provider.remove_client(client_id)
        assert not provider.remove_client(client_id)
        assert 401 == await status(new)
        assert ["cm: wrong client_secret", "cm: unknown client_id"] == provider.rejected


async def test_token_calls_in_flight_are_counted(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("rfc6749") as provider:
        provider.token_delay = 0.05
        await asyncio.gather(
            *(post_form(session, provider.token_url, cc_form(provider)) for _ in range(5))
        )
        assert (5, 0) == (provider.max_token_calls_in_flight, provider.token_calls_in_flight)
        provider.reset_counters()
        assert 0 == provider.max_token_calls_in_flight


async def test_a_client_gone_before_its_body_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A token request cut short while the fake holds it (token_delay) leaves
    # the body unread: the fake answers nobody, without an error logged.
    async with FakeProvider("cm") as fake:
        fake.token_delay = 0.3
        _, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(
            f"POST {fake.token_url.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            "grant_type=cli".encode()
        )
        await writer.drain()
        await eventually(lambda: 1 == fake.token_calls_in_flight)  # held by the delay
        writer.close()
        await writer.wait_closed()
        await eventually(lambda: 0 == fake.token_calls_in_flight)
    assert 1 == fake.token_calls
    assert [] == [r for r in caplog.records if r.name.startswith("aiohttp")]
