"""Mutual TLS client authentication and certificate-bound tokens (RFC 8705).

A loopback authorization server written from RFC 8705: its token endpoint
demands a client certificate (``CERT_REQUIRED``), authenticates the client
by it (§2.1 PKI: the certificate's subject; §2.2 self-signed: the registered
certificate), and issues JWT access tokens bound to the certificate's
SHA-256 thumbprint (§3.1, ``cnf: {"x5t#S256": ...}``). Its API verifies the
token's signature and refuses (401) it over a connection whose certificate
does not match its ``cnf.x5t#S256``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import jwt
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from aiopay_auth import Network, Provider, TokenManager

from .tls_servers import client_context, peer_der, serve_tls, server_context


pytestmark = pytest.mark.anyio

AT_ONCE = 5.0
SERVER_KEY = "the-authorization-server's-own-hs256-key"  # signs the access tokens


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: base64url of the SHA-256 of the DER certificate, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@attrs.define
class AuthServer:
    """What the server saw and issued."""

    token_url: URL = attrs.Factory(URL)
    api: URL = attrs.Factory(URL)
    bound: dict[str, str] = attrs.Factory(dict)  # token -> its cnf.x5t#S256
    token_forms: list[dict[str, str]] = attrs.Factory(list)
    api_answers: list[int] = attrs.Factory(list)
    subject_of: dict[str, str] = attrs.Factory(dict)  # PKI clients: id -> subject CN
    self_signed: dict[str, str] = attrs.Factory(dict)  # self-signed clients: id -> x5t#S256


@asynccontextmanager
async def auth_server(ca: trustme.CA, extra_trust: bytes = b"") -> AsyncIterator[AuthServer]:
    state = AuthServer()

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        state.token_forms.append(form)
        der = peer_der(request)
        assert der is not None  # CERT_REQUIRED: no handshake without one
        client_id = form.get("client_id", "")
        cert = x509.load_der_x509_certificate(der)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if "client_secret" in form or "client_assertion" in form:
            ok = False  # RFC 8705 §2: the certificate alone authenticates
        elif client_id in state.subject_of:
            ok = bool(cn) and cn[0].value == state.subject_of[client_id]
        else:
            ok = state.self_signed.get(client_id) == thumbprint(der)
        if not ok:
            return web.json_response({"error": "invalid_client"}, status=401)
        # A JWT access token bound to the certificate (RFC 8705 §3.1).
        claims = {
            "sub": client_id,
            "exp": int(time.time()) + 60,
            "jti": str(len(state.bound) + 1),
            "cnf": {"x5t#S256": thumbprint(der)},
        }
        issued = jwt.encode(claims, SERVER_KEY, algorithm="HS256")
        state.bound[issued] = thumbprint(der)
        return web.json_response({"access_token": issued, "token_type": "Bearer", "expires_in": 60})

    async def api(request: web.Request) -> web.Response:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        der = peer_der(request)
        try:
            claims = jwt.decode(presented, SERVER_KEY, algorithms=["HS256"])
            bound_to = claims["cnf"]["x5t#S256"]
        except (jwt.InvalidTokenError, KeyError, TypeError):
            bound_to = None
        if der is None or bound_to is None or bound_to != thumbprint(der):
            state.api_answers.append(401)
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        state.api_answers.append(200)
        return web.json_response({"paid": True})

    token_context = server_context(ca, client_certs=ssl.CERT_REQUIRED)
    api_context = server_context(ca, client_certs=ssl.CERT_OPTIONAL)
    if extra_trust:
        for context in (token_context, api_context):
            context.load_verify_locations(cadata=extra_trust.decode())
    async with (
        serve_tls({"/token": token}, token_context) as token_base,
        serve_tls({"/api/{tail:.*}": api}, api_context) as api_base,
    ):
        state.token_url, state.api = token_base / "token", api_base / "api"
        yield state


def provider(server: AuthServer, method: str) -> Provider:
    return Provider(
        name="mtls",
        token_url=server.token_url,
        api=server.api,
        client_id="merchant-7",
        client_auth=method,  # type: ignore[arg-type]
    )


def self_signed_cert() -> tuple[bytes, bytes]:
    """A self-signed client certificate and its key, PEM (RFC 8705 §2.2)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "merchant-7 self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_a_certificate_bound_token_is_accepted_only_with_the_same_certificate() -> None:
    ca = trustme.CA()
    mine = ca.issue_cert("merchant-7.clients.test", common_name="merchant-7")
    other = ca.issue_cert("merchant-8.clients.test", common_name="merchant-8")
    with_mine = Network(ssl=client_context(ca, mine))
    async with auth_server(ca) as server:
        server.subject_of["merchant-7"] = "merchant-7"
        async with TokenManager(network=with_mine) as tokens:
            holder = tokens.add(provider(server, "tls_client_auth"))
            await holder.get(timeout=AT_ONCE)
            statuses = []
            for network in (
                with_mine,
                Network(ssl=client_context(ca)),
                Network(ssl=client_context(ca, other)),
            ):
                async with (
                    tokens.session(holder, network=network) as http,
                    http.post(server.api / "payments", json={"amount": 1}) as resp,
                ):
                    statuses.append(resp.status)
    assert [200, 401, 401] == statuses
    # The token request carried the client id and no secret (RFC 8705 §2).
    assert {"grant_type": "client_credentials", "client_id": "merchant-7"} == server.token_forms[0]
    mine_der = ssl.PEM_cert_to_DER_cert(mine.cert_chain_pems[0].bytes().decode())
    issued = [jwt.decode(t, SERVER_KEY, algorithms=["HS256"]) for t in server.bound]
    assert [{"x5t#S256": thumbprint(mine_der)}] * len(issued) == [c["cnf"] for c in issued]


async def test_self_signed_tls_client_auth_sends_the_registered_certificate() -> None:
    ca = trustme.CA()
    cert_pem, key_pem = self_signed_cert()
    context = client_context(ca)
    with trustme.Blob(cert_pem + key_pem).tempfile() as path:
        context.load_cert_chain(path)
    network = Network(ssl=context)
    async with auth_server(ca, extra_trust=cert_pem) as server:
        server.self_signed["merchant-7"] = thumbprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode()))
        async with TokenManager(network=network) as tokens:
            holder = tokens.add(provider(server, "self_signed_tls_client_auth"))
            async with (
                tokens.session(holder, network=network) as http,
                http.post(server.api / "payments", json={"amount": 1}) as resp,
            ):
                status = resp.status
    assert 200 == status
    assert [{"grant_type": "client_credentials", "client_id": "merchant-7"}] == server.token_forms
