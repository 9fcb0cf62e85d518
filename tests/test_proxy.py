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
from aiopay_auth.exceptions import ConfigError, TokenUnavailableError

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


_PROXY_VARIABLES = [
    name
    for scheme in ("http", "https", "ws", "wss", "no", "all")
    for name in (f"{scheme}_proxy", f"{scheme}_proxy".upper())
]
_MALFORMED = "HTTPS_PROXY from the environment (trust_env) must be an absolute http:// URL"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        pytest.param(
            "HTTPS_PROXY",
            f"{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{{port}}",
            f"{_MALFORMED} (host and port)",
            id="no-scheme",
        ),
        pytest.param(
            "HTTPS_PROXY",
            f"http://{PROXY_USER}:{PROXY_PASSWORD}@[::1",
            f"{_MALFORMED} (host and port): its host is not a valid IPv6 address",
            id="unclosed-ipv6",
        ),
        pytest.param(
            "HTTPS_PROXY",
            f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:99999",
            f"{_MALFORMED} (host and port): its port is not in 1-65535",
            id="port-out-of-range",
        ),
        pytest.param(
            "HTTPS_PROXY",
            f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{{port}}",
            f"{_MALFORMED} (host and port)",
            id="socks5",
        ),
        pytest.param(
            "https_proxy",
            f"http://{PROXY_USER}:{PROXY_PASSWORD}@:{{port}}",
            "https_proxy from the environment (trust_env) must be an absolute http:// URL "
            "(host and port): it has no host",
            id="lower-case-no-host",
        ),
        pytest.param(
            # aiohttp parses every scheme's proxy for any request.
            "HTTP_PROXY",
            f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:port",
            "HTTP_PROXY from the environment (trust_env) must be an absolute http:// URL "
            "(host and port): its port is not a number",
            id="http-proxy-for-an-https-request",
        ),
    ],
)
async def test_a_malformed_proxy_from_the_environment_is_a_config_error_naming_it(
    variable: str,
    value: str,
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Red team pass 11: a proxy with no scheme was a `connection` failure
    # (retried as an outage), an unclosed IPv6 host an "unexpected
    # ValueError in refresher". Now: configuration, never retried as an
    # outage, naming the variable and never quoting its password.
    caplog.set_level(logging.DEBUG, logger="aiopay_auth")
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ca = trustme.CA()
    async with (
        serve_tls({"/token": answer}, server_context(ca)) as base,
        forward_proxy() as proxy,
    ):
        monkeypatch.setenv(variable, value.format(port=proxy.url.port))
        network = Network(trust_env=True, ssl=client_context(ca))
        async with TokenManager(network=network) as tokens:
            holder = tokens.add(provider(base))
            with pytest.raises(TokenUnavailableError) as caught:
                await holder.get(timeout=AT_ONCE)
            health = holder.health()
        error = holder.last_error
    assert isinstance(error, ConfigError)
    assert f"[proxied] {problem}" == str(error)
    assert not error.retryable
    assert not caught.value.retryable  # the waiter failed at once, not at the bound
    assert caught.value.last_error is error
    assert ("config", 1) == (health.last_error_kind, health.failures)
    assert ([], []) == (proxy.tunnels, proxy.forwarded)  # nothing was sent
    shown = "".join(traceback.format_exception(caught.value)) + repr(error) + caplog.text
    assert PROXY_PASSWORD not in shown


async def test_the_environments_proxies_that_work_still_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the check must not refuse: a malformed proxy NO_PROXY bypasses
    # (aiohttp never reads it), an https:// proxy aiohttp ignores (with a
    # warning), and a good one.
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ca = trustme.CA()
    network = Network(trust_env=True, ssl=client_context(ca))
    async with (
        serve_tls({"/token": answer}, server_context(ca)) as base,
        forward_proxy() as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@[::1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with TokenManager(network=network) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.setenv("HTTPS_PROXY", f"https://127.0.0.1:{proxy.url.port}")
        async with TokenManager(network=network) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        assert [] == proxy.tunnels  # both went around it
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.url.port}/")
        async with TokenManager(network=network) as tokens:
            await tokens.add(provider(base)).get(timeout=AT_ONCE)
        assert [f"127.0.0.1:{base.port}"] == proxy.tunnels
