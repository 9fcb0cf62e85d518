"""Signed client assertions (RFC 7523 §2.2, OIDC Core §9) against an endpoint that verifies them.

The endpoint (``tests/jwt_endpoint.py``) checks each JWS with the public key
(or the shared secret for HS256) using ``cryptography``/``hmac``, not the
library the SDK signs with, and refuses a replayed or an expired assertion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aiopay_auth import (
    ClientAssertion,
    Provider,
    Secret,
    TokenManager,
    build_token_request,
    parse_token_response,
)
from aiopay_auth._fetch import HttpTokenSource
from aiopay_auth.exceptions import ConfigError, TokenResponseError, TokenUnavailableError

from .helpers import run_python
from .jwt_endpoint import Client, JwtEndpoint
from .loopback import serve


pytestmark = pytest.mark.anyio

HS_SECRET = "a-client-secret-of-32-bytes-min-for-hs256"  # RFC 7518 §3.2


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(name="keys", scope="module")
def _keys() -> dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {"RS256": rsa_key, "PS256": rsa_key, "ES256": ec.generate_private_key(ec.SECP256R1())}


def setup(
    alg: str, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], token_url: str
) -> tuple[Provider, Client]:
    base = token_url.removesuffix("/token")
    if alg == "HS256":
        provider = Provider(
            name="jwt",
            token_url=token_url,
            api=base + "/api",
            client_id="client-hs",
            client_secret=HS_SECRET,
            client_auth="client_secret_jwt",
        )
        return provider, Client("client-hs", "HS256", HS_SECRET.encode())
    key = keys[alg]
    provider = Provider(
        name="jwt",
        token_url=token_url,
        api=base + "/api",
        client_id="client-pk",
        client_auth="private_key_jwt",
        assertion=ClientAssertion(key=pem(key), alg=alg, kid="key-2026"),  # type: ignore[arg-type]
    )
    return provider, Client("client-pk", alg, key.public_key(), kid="key-2026")


@asynccontextmanager
async def jwt_server() -> AsyncIterator[JwtEndpoint]:
    endpoint = JwtEndpoint(url="", clients={})

    async def handle(request: web.Request) -> web.Response:
        return await endpoint.handle(request)

    async with serve(handle) as server:
        endpoint.url = f"{server.url}/token"
        yield endpoint


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "HS256"])
async def test_every_token_request_carries_a_fresh_verified_assertion(
    alg: str, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]
) -> None:
    async with jwt_server() as endpoint, aiohttp.ClientSession() as session:
        provider, client = setup(alg, keys, endpoint.url)
        endpoint.clients[client.client_id] = client
        source = HttpTokenSource(provider, session, timeout=10)
        first = await source.fetch(None)
        second = await source.fetch(first.refresh_token)  # the refresh-token grant
    assert ("tok-1", "tok-2") == (first.access_token, second.access_token)
    assert [] == endpoint.refused
    grants = [a.grant_type for a in endpoint.accepted]
    assert ["client_credentials", "refresh_token"] == grants
    one, two = (a.claims for a in endpoint.accepted)
    assert one["jti"] != two["jti"]
    for accepted in endpoint.accepted:
        claims = accepted.claims
        assert claims["iss"] == claims["sub"] == client.client_id
        assert endpoint.url == claims["aud"]
        assert 60 == claims["exp"] - claims["iat"]
        assert abs(claims["iat"] - time.time()) < 60
        assert alg == accepted.header["alg"]
        assert client.kid == accepted.header.get("kid")


async def test_a_replayed_or_expired_assertion_is_refused(
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    async with jwt_server() as endpoint, aiohttp.ClientSession() as session:
        provider, client = setup("ES256", keys, endpoint.url)
        endpoint.clients[client.client_id] = client
        request = build_token_request(provider, now=time.time(), jti="jti-once")
        answers = []
        for _ in range(2):  # the same assertion, sent twice
            async with session.post(
                request.url, data=request.body, headers=request.headers
            ) as resp:
                answers.append((resp.status, (await resp.json()).get("error")))
        stale = build_token_request(provider, now=time.time() - 3600, jti="jti-stale")
        async with session.post(stale.url, data=stale.body, headers=stale.headers) as resp:
            answers.append((resp.status, (await resp.json()).get("error")))
        # Through the SDK, the refusal is a typed error that cannot heal.
        with pytest.raises(TokenResponseError) as caught:
            parse_token_response(
                provider,
                status=401,
                headers={},
                body=b'{"error": "invalid_client"}',
                issued_at=0.0,
                wall_now=time.time(),
            )
    assert [(200, None), (401, "invalid_client"), (401, "invalid_client")] == answers
    assert ["jti reused", "assertion expired"] == endpoint.refused
    assert not caught.value.retryable


async def test_the_private_key_never_shows(
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")

    async def echo(request: web.Request) -> web.Response:
        # A hostile endpoint quoting what it was sent.
        form = await request.post()
        text = "bad assertion " + str(form.get("client_assertion", ""))
        body = {"error": "invalid_client", "error_description": text}
        return web.json_response(body, status=401)

    async with serve(echo) as server, TokenManager() as tokens:
        provider, _ = setup("RS256", keys, f"{server.url}/token")
        holder = tokens.add(provider)
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get(timeout=5)
    key = pem(keys["RS256"])
    body = key.splitlines()[5]  # a line of the key's base64
    shown = repr(provider) + str(caught.value) + caplog.text + repr(provider.assertion)
    assert body not in shown
    assert "PRIVATE KEY" not in shown
    assert Secret(key) in provider.secrets()
    assert "invalid_client" in str(caught.value.last_error)


def test_validation_names_what_is_wrong_without_quoting_keys(
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    common = {"name": "p", "token_url": "https://auth.test/token", "api": "https://api.test"}
    cases = [
        ({"client_auth": "private_key_jwt"}, "needs assertion=ClientAssertion(key=<PEM>)"),
        (
            {
                "client_auth": "private_key_jwt",
                "assertion": ClientAssertion(key=pem(keys["ES256"]), alg="RS256"),
            },
            "assertion key is not a PEM private key that can sign RS256",
        ),
        (
            {
                "client_auth": "private_key_jwt",
                "assertion": ClientAssertion(key="-----BEGIN PRIVATE KEY-----\nnope\n"),
            },
            "assertion key is not a PEM private key that can sign RS256",
        ),
        (
            {
                "client_auth": "private_key_jwt",
                "assertion": ClientAssertion(key=pem(keys["RS256"]), alg="HS256"),
            },
            "assertion alg for private_key_jwt must be one of",
        ),
        (
            {"client_auth": "client_secret_jwt", "client_secret": "short-secret"},
            "client_secret is too short for HS256",
        ),
        ({"client_auth": "client_secret_jwt"}, "client_secret must not be empty"),
        ({"client_auth": "body"}, "client_secret must not be empty"),
        (
            {"client_auth": "basic", "client_secret": "s", "assertion": ClientAssertion()},
            "assertion= goes with client_auth",
        ),
    ]
    for extra, expected in cases:
        with pytest.raises(ConfigError) as caught:
            Provider(client_id="c", **common, **extra)  # type: ignore[arg-type]
        assert expected in str(caught.value), extra
        assert "nope" not in str(caught.value) and "short-secret" not in str(caught.value)
    # No client secret is needed where none is sent.
    for method in ("tls_client_auth", "self_signed_tls_client_auth"):
        assert not Provider(client_id="c", client_auth=method, **common).client_secret  # type: ignore[arg-type]


def test_build_token_request_needs_the_time_and_a_jti_for_an_assertion() -> None:
    provider = Provider(
        name="p",
        token_url="https://auth.test/token",
        api="https://api.test",
        client_id="c",
        client_secret=HS_SECRET,
        client_auth="client_secret_jwt",
    )
    with pytest.raises(ConfigError, match="needs now= and jti="):
        build_token_request(provider)
    one = build_token_request(provider, now=1_800_000_000.0, jti="a")
    assert one == build_token_request(provider, now=1_800_000_000.0, jti="a")  # pure
    assert one.body != build_token_request(provider, now=1_800_000_000.0, jti="b").body


def test_the_core_runs_without_the_jwt_extra() -> None:
    script = (
        "import sys; sys.modules['jwt'] = None\n"
        "import aiopay_auth\n"
        "from aiopay_auth import Provider, build_token_request\n"
        "p = Provider(name='p', token_url='https://a.test/t', api='https://a.test',"
        " client_id='c', client_secret='s')\n"
        "build_token_request(p)\n"
        "try:\n"
        "    Provider(name='p', token_url='https://a.test/t', api='https://a.test',"
        " client_id='c', client_secret='" + HS_SECRET + "', client_auth='client_secret_jwt')\n"
        "except aiopay_auth.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(script)
    assert "" == result.stderr
    assert "pip install 'aiopay-auth[jwt]'" in result.stdout
