"""TLS to the token endpoint: a private CA, a wrong CA, a missing client certificate.

Real TLS servers on 127.0.0.1 with throwaway CAs made here (``trustme``).
A TLS failure is configuration, not an outage: it must be typed
(``TokenTLSError``), name what TLS said, and reach every waiter at once.
"""

from __future__ import annotations

import ssl
import time

import aiohttp
import pytest
import trustme
from aiohttp import web

from aiopay_auth import Network, Provider, TokenManager
from aiopay_auth._network import tls_problem
from aiopay_auth.exceptions import TokenTLSError, TokenUnavailableError

from .loopback import serve
from .tls_servers import alerting_tls_server, client_context, serve_tls, server_context


pytestmark = pytest.mark.anyio

# Proven bound for "at once": far below the 30 s wait bound, roomy for a loaded machine.
AT_ONCE = 5.0


def provider(base: object) -> Provider:
    return Provider(
        name="tls",
        token_url=f"{base}/token",
        api=f"{base}/api",
        client_id="client-1",
        client_secret="s3cret-value",
    )


async def token(request: web.Request) -> web.Response:
    return web.json_response({"access_token": "tok-1", "token_type": "Bearer", "expires_in": 60})


async def test_a_private_ca_is_trusted_through_network_ssl() -> None:
    ca = trustme.CA()
    async with (
        serve_tls({"/token": token}, server_context(ca)) as base,
        TokenManager(network=Network(ssl=client_context(ca))) as tokens,
    ):
        holder = tokens.add(provider(base))
        got = await holder.get(timeout=AT_ONCE)
    assert "tok-1" == got.access_token


@pytest.mark.parametrize("trust", ["another-ca", "system-cas"])
async def test_an_untrusted_server_fails_every_waiter_at_once_with_a_typed_tls_error(
    trust: str,
) -> None:
    ca = trustme.CA()
    network = Network(ssl=client_context(trustme.CA())) if trust == "another-ca" else None
    async with (
        serve_tls({"/token": token}, server_context(ca)) as base,
        TokenManager(network=network) as tokens,
    ):
        holder = tokens.add(provider(base))
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get()  # the wait bound is 30 s
        waited = time.monotonic() - started
        health = holder.health()
    assert waited < AT_ONCE
    err = caught.value.last_error
    assert isinstance(err, TokenTLSError)
    assert not err.retryable and not caught.value.retryable
    assert "certificate verify failed" in str(err)
    assert err.__cause__ is None  # the ssl error is named in the message, not chained
    assert err.__context__ is None
    assert "tls" == health.last_error_kind
    assert 1 == health.fetches  # no storm: the next try is at the slow cadence
    assert "s3cret" not in str(caught.value)


async def test_a_missing_client_certificate_is_a_typed_tls_error() -> None:
    ca = trustme.CA()
    context = server_context(ca, client_certs=ssl.CERT_REQUIRED)
    async with (
        alerting_tls_server(context) as server,
        TokenManager(network=Network(ssl=client_context(ca))) as tokens,
    ):
        holder = tokens.add(provider(server.url))
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get()
        waited = time.monotonic() - started
    assert waited < AT_ONCE
    err = caught.value.last_error
    assert isinstance(err, TokenTLSError)
    assert "certificate required" in str(err)
    assert ["PEER_DID_NOT_RETURN_A_CERTIFICATE"] == server.failures


async def test_the_same_server_accepts_the_client_certificate_from_network_ssl() -> None:
    ca = trustme.CA()
    context = server_context(ca, client_certs=ssl.CERT_REQUIRED)
    cert = ca.issue_cert("client-1")
    async with (
        alerting_tls_server(context) as server,
        TokenManager(network=Network(ssl=client_context(ca, cert))) as tokens,
    ):
        holder = tokens.add(provider(server.url))
        got = await holder.get(timeout=AT_ONCE)
    assert "tok-mtls" == got.access_token
    assert ([], 1) == (server.failures, server.handshakes)


async def test_a_provider_can_have_its_own_network() -> None:
    ca, other = trustme.CA(), trustme.CA()
    async with (
        serve_tls({"/token": token}, server_context(ca)) as base,
        serve_tls({"/token": token}, server_context(other)) as other_base,
        TokenManager(network=Network(ssl=client_context(ca))) as tokens,
    ):
        first = tokens.add(provider(base))
        second = tokens.add(
            Provider(
                name="other",
                token_url=f"{other_base}/token",
                api=f"{other_base}/api",
                client_id="c",
                client_secret="s",
            ),
            network=Network(ssl=client_context(other)),
        )
        assert "tok-1" == (await first.get(timeout=AT_ONCE)).access_token
        assert "tok-1" == (await second.get(timeout=AT_ONCE)).access_token


async def test_tls_spoken_to_a_plain_http_port_is_a_typed_tls_error() -> None:
    async with serve(token) as plain:
        https = plain.url.with_scheme("https")
        async with TokenManager() as tokens:
            holder = tokens.add(provider(https))
            with pytest.raises(TokenUnavailableError) as caught:
                await holder.get(timeout=AT_ONCE)
    err = caught.value.last_error
    assert isinstance(err, TokenTLSError)
    assert "wrong version number" in str(err)


def ssl_error(text: str) -> ssl.SSLError:
    return ssl.SSLError(1, text)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ssl_error("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
            "tlsv13 alert certificate required",
        ),
        (
            ssl_error(
                "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure (_ssl.c:1)"
            ),
            "sslv3 alert handshake failure",
        ),
        # What an unreliable network can cause stays a retryable connection failure.
        (ssl_error("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed"), None),
        (ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred"), None),
        (ConnectionResetError(104, "Connection reset by peer"), None),
        (TimeoutError(), None),
    ],
)
def test_only_tls_set_up_failures_count_as_tls(exc: BaseException, expected: str | None) -> None:
    wrapped = aiohttp.ClientOSError(*exc.args)
    wrapped.__cause__ = exc
    assert expected == tls_problem(exc) == tls_problem(wrapped)
