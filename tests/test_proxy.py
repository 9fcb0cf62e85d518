"""Token endpoint and API through a real forward proxy on 127.0.0.1.

The proxy (``tests/forward_proxy.py``) counts what passed through it, so
each test proves the request went through it, or around it, and that the
proxy's password never shows in a repr, an error or a log line.
"""

from __future__ import annotations

import contextlib
import logging
import traceback

import pytest
import trustme
from aiohttp import web

from aiopay_auth import Network, Provider, TokenManager
from aiopay_auth.exceptions import TokenUnavailableError

from .forward_proxy import forward_proxy
from .loopback import serve
from .tls_servers import client_context, serve_tls, server_context


pytestmark = pytest.mark.anyio

PROXY_USER, PROXY_PASSWORD = "worker", "proxy-pa55-narwhal"
AT_ONCE = 5.0


async def answer(request: web.Request) -> web.Response:
    if request.path == "/token":
        body = {"access_token": "tok-proxied", "token_type": "Bearer", "expires_in": 60}
        return web.json_response(body)
    return web.json_response({"auth": request.headers.get("Authorization")})


def provider(base: object) -> Provider:
    return Provider(
        name="proxied",
        token_url=f"{base}/token",
        api=f"{base}/api",
        client_id="client-1",
        client_secret="client-s3cret",
    )


async def test_token_and_api_requests_go_through_the_proxy_with_its_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    async with (
        serve(answer) as server,
        forward_proxy((PROXY_USER, PROXY_PASSWORD)) as proxy,
    ):
        network = Network(proxy=proxy.url_with_credentials())
        async with TokenManager(network=network) as tokens:
            holder = tokens.add(provider(server.url))
            async with (
                tokens.session(holder, network=network) as http,
                http.get(server.url / "api" / "pay") as resp,
            ):
                body = await resp.json()
    assert {"auth": "Bearer tok-proxied"} == body
    assert [f"{server.url}/token", f"{server.url}/api/pay"] == proxy.forwarded
    assert 0 == proxy.refused
    assert [s.path for s in server.seen] == ["/token", "/api/pay"]
    shown = repr(network) + str(network) + caplog.text
    assert PROXY_PASSWORD not in shown
    assert f"proxy='http://127.0.0.1:{proxy.url.port}'" in repr(network)


async def test_https_goes_through_a_connect_tunnel() -> None:
    ca = trustme.CA()
    async with (
        serve_tls({"/token": answer, "/api/{tail:.*}": answer}, server_context(ca)) as base,
        forward_proxy() as proxy,
    ):
        network = Network(proxy=str(proxy.url), ssl=client_context(ca))
        async with TokenManager(network=network) as tokens:
            holder = tokens.add(provider(base))
            async with (
                tokens.session(holder, network=network) as http,
                http.get(base / "api" / "pay") as resp,
            ):
                body = await resp.json()
    assert {"auth": "Bearer tok-proxied"} == body
    # One tunnel per connection: the token session's and the API session's.
    assert [f"127.0.0.1:{base.port}"] * 2 == proxy.tunnels
    assert [] == proxy.forwarded


async def test_trust_env_takes_https_proxy_and_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = trustme.CA()
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (
        serve_tls({"/token": answer}, server_context(ca)) as base,
        forward_proxy() as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", str(proxy.url))
        monkeypatch.setenv("https_proxy", str(proxy.url))
        network = Network(trust_env=True, ssl=client_context(ca))
        async with TokenManager(network=network) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        assert [f"127.0.0.1:{base.port}"] == proxy.tunnels

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        async with TokenManager(network=network) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        assert 1 == len(proxy.tunnels)  # the second went around the proxy

        # Without trust_env the environment is ignored, as before.
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.delenv("no_proxy")
        async with TokenManager(network=Network(ssl=client_context(ca))) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        assert 1 == len(proxy.tunnels)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_refusing_our_credentials_never_shows_them(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    # http: the proxy's 407 is the token endpoint's answer; https: aiohttp's
    # CONNECT fails, and its error (chained as the cause) quotes the proxy URL.
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    ca = trustme.CA()
    server_cm = serve(answer) if scheme == "http" else None
    async with contextlib.AsyncExitStack() as stack:
        if server_cm is not None:
            base = (await stack.enter_async_context(server_cm)).url
        else:
            base = await stack.enter_async_context(
                serve_tls({"/token": answer}, server_context(ca))
            )
        proxy = await stack.enter_async_context(forward_proxy((PROXY_USER, "the-right-one")))
        network = Network(
            proxy=proxy.url.with_user(PROXY_USER).with_password(PROXY_PASSWORD),
            ssl=client_context(ca),
        )
        tokens = await stack.enter_async_context(TokenManager(network=network))
        holder = tokens.add(provider(base))
        with pytest.raises(TokenUnavailableError) as caught:
            await holder.get(timeout=AT_ONCE)
    assert 1 <= proxy.refused
    assert [] == proxy.forwarded + proxy.tunnels  # nothing got past the proxy
    err = caught.value.last_error
    assert err is not None
    assert "407" in str(err)  # named in our message: aiohttp's error is not chained
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert PROXY_PASSWORD not in shown


async def test_session_network_trust_env_sends_api_requests_through_https_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = trustme.CA()
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (
        serve_tls({"/token": answer, "/api/{tail:.*}": answer}, server_context(ca)) as base,
        forward_proxy() as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", str(proxy.url))
        monkeypatch.setenv("https_proxy", str(proxy.url))
        direct = Network(ssl=client_context(ca))  # the token endpoint: no proxy
        async with TokenManager(network=direct) as tokens:
            holder = tokens.add(provider(base))
            await holder.get(timeout=AT_ONCE)
            assert [] == proxy.tunnels
            api = Network(trust_env=True, ssl=client_context(ca))
            async with (
                tokens.session(holder, network=api) as http,
                http.get(base / "api" / "pay") as resp,
            ):
                body = await resp.json()
    assert {"auth": "Bearer tok-proxied"} == body
    assert [f"127.0.0.1:{base.port}"] == proxy.tunnels  # the API's request only
