"""Token endpoint and API through a real forward proxy on 127.0.0.1.

The proxy (``tests/forward_proxy.py``) counts what passed through it, so
each test proves the request went through it, or around it, and that the
proxy's password never shows in a repr, an error or a log line.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import traceback
from pathlib import Path

import aiohttp
import attrs
import pytest
import trustme
from aiohttp import web
from yarl import URL

from aiopay_auth import Network, Provider, TokenManager
from aiopay_auth._provider import ClientAuth, plain_http_proxy_problem
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


# --- ~/.netrc with trust_env: the token authenticates, netrc does not ---------

PROXY_VARS = (
    *("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"),
    *("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"),
)


def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def netrc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    """A .netrc in *tmp_path*, read through NETRC (never the user's own)."""
    path = tmp_path / "netrc"
    path.write_text(entry + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


NETRC_BASIC = "Basic " + base64.b64encode(b"ciuser:ciPW").decode()


@pytest.mark.parametrize("client_auth", ["body", "basic"])
@pytest.mark.parametrize("entry", ["machine 127.0.0.1 login ciuser password ciPW", "default"])
async def test_netrc_credentials_reach_neither_the_token_endpoint_nor_the_api(
    client_auth: ClientAuth, entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_env_proxy(monkeypatch)
    if entry == "default":
        entry = "default login ciuser password ciPW"
    netrc_file(tmp_path, monkeypatch, entry)
    network = Network(trust_env=True)
    async with serve(answer) as server, TokenManager(network=network) as tokens:
        profile = attrs.evolve(provider(server.url), client_auth=client_auth)
        holder = tokens.add(profile)
        await holder.get(timeout=AT_ONCE)
        async with tokens.session(holder, network=network) as http:
            async with http.get(server.url / "api" / "pay") as resp:
                body = await resp.json()
            # Out of every API, netrc applies as aiohttp has it.
            async with http.get(server.url / "elsewhere") as resp:
                elsewhere = await resp.json()
    assert {"auth": "Bearer tok-proxied"} == body
    token_auth = server.seen[0].headers.get("Authorization")
    if client_auth == "basic":
        assert token_auth == "Basic " + base64.b64encode(b"client-1:client-s3cret").decode()
    else:
        assert token_auth is None
    assert {"auth": NETRC_BASIC} == elsewhere
    assert ["/token", "/api/pay", "/elsewhere"] == [s.path for s in server.seen]


async def test_a_callers_own_basic_auth_other_than_netrc_is_still_respected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a .netrc entry for the host, aiohttp refuses an Authorization
    # header (it would combine it with netrc's); credentials in the URL
    # (or auth=, which aiohttp 3.14 deprecates) replace netrc's.
    no_env_proxy(monkeypatch)
    netrc_file(tmp_path, monkeypatch, "default login ciuser password ciPW")
    network = Network(trust_env=True)
    async with serve(answer) as server, TokenManager() as tokens:
        holder = tokens.add(provider(server.url))
        url = (server.url / "api" / "pay").with_user("me").with_password("mine")
        async with tokens.session(holder, network=network) as http, http.get(url) as resp:
            body = await resp.json()
    assert {"auth": "Basic " + base64.b64encode(b"me:mine").decode()} == body


# --- the proxy's credentials never show in an API session's errors ------------


def never_shown(error: BaseException, password: str) -> None:
    encoded = base64.b64encode(f"{PROXY_USER}:{password}".encode()).decode()
    shown = repr(error) + str(error) + "".join(traceback.format_exception(error))
    info = getattr(error, "request_info", None)
    shown += repr(info) + repr(getattr(error, "args", ()))
    assert password not in shown
    assert encoded not in shown
    assert "Proxy-Authorization" not in shown


@pytest.mark.parametrize("how", ["explicit", "environment"])
async def test_an_api_connect_refused_by_the_proxy_never_shows_its_credentials(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_env_proxy(monkeypatch)
    ca = trustme.CA()
    async with (
        serve_tls({"/token": answer, "/api/{tail:.*}": answer}, server_context(ca)) as base,
        forward_proxy((PROXY_USER, "the-right-one")) as proxy,
    ):
        with_password = proxy.url.with_user(PROXY_USER).with_password(PROXY_PASSWORD)
        if how == "explicit":
            api = Network(proxy=with_password, ssl=client_context(ca))
        else:
            monkeypatch.setenv("HTTPS_PROXY", str(with_password))
            monkeypatch.setenv("https_proxy", str(with_password))
            api = Network(trust_env=True, ssl=client_context(ca))
        async with TokenManager(network=Network(ssl=client_context(ca))) as tokens:
            holder = tokens.add(provider(base))
            await holder.get(timeout=AT_ONCE)
            async with tokens.session(holder, network=api) as http:
                for url in (base / "api" / "pay", base / "elsewhere"):  # in scope, and out
                    with pytest.raises(aiohttp.ClientHttpProxyError) as caught:
                        await http.get(url)
                    assert 407 == caught.value.status
                    never_shown(caught.value, PROXY_PASSWORD)
    assert 2 == proxy.refused
    assert [] == proxy.tunnels


async def test_a_plain_http_api_error_through_the_proxy_never_shows_its_credentials() -> None:
    async def failing(request: web.Request) -> web.Response:
        if request.path == "/token":
            return await answer(request)
        return web.json_response({"error": "down"}, status=500)

    async with (
        serve(failing) as server,
        forward_proxy((PROXY_USER, PROXY_PASSWORD)) as proxy,
    ):
        api = Network(proxy=proxy.url_with_credentials())
        async with TokenManager() as tokens:
            holder = tokens.add(provider(server.url))
            async with tokens.session(holder, network=api, raise_for_status=True) as http:
                for url in (server.url / "api" / "pay", server.url / "elsewhere"):
                    with pytest.raises(aiohttp.ClientResponseError) as caught:
                        await http.get(url)
                    assert 500 == caught.value.status
                    never_shown(caught.value, PROXY_PASSWORD)
                    assert "tok-proxied" not in repr(caught.value)
    assert 0 == proxy.refused
    assert 2 == len(proxy.forwarded)


# --- plain HTTP (to loopback) through a proxy that is not on loopback ---------

# TEST-NET-1 (RFC 5737): never contacted, the request is refused before.
REMOTE_PROXY = "http://192.0.2.1:3128"


@pytest.mark.parametrize(
    ("url", "proxy", "allow", "refused"),
    [
        ("http://127.0.0.1:8080/api", REMOTE_PROXY, False, True),
        ("http://localhost/token", "http://proxy.internal:3128", False, True),
        ("http://127.0.0.1:8080/api", REMOTE_PROXY, True, False),  # the documented opt-out
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:3128", False, False),
        ("http://127.0.0.1:8080/api", "http://[::1]:3128", False, False),
        ("https://127.0.0.1:8080/api", REMOTE_PROXY, False, False),
        ("http://127.0.0.1:8080/api", None, False, False),
    ],
)
def test_the_plain_http_rule_considers_the_proxy(
    url: str, proxy: str | None, allow: bool, refused: bool
) -> None:
    problem = plain_http_proxy_problem(
        "api", URL(url), None if proxy is None else URL(proxy), allow
    )
    assert refused == (problem is not None)
    if problem is not None:
        assert "not on loopback" in problem
        assert "allow_insecure_http" in problem


async def test_a_known_remote_proxy_for_plain_http_is_refused_at_construction() -> None:
    remote = Network(proxy=f"http://user:hunter2-pw@{REMOTE_PROXY.removeprefix('http://')}")
    plain = provider("http://127.0.0.1:9")
    async with TokenManager(network=remote) as tokens:
        with pytest.raises(ConfigError, match=r"token_url .* not on loopback") as caught:
            tokens.add(plain)
        assert "hunter2" not in str(caught.value)
    async with TokenManager() as tokens:
        with pytest.raises(ConfigError, match=r"token_url .* not on loopback"):
            tokens.add(plain, network=remote)
        holder = tokens.add(plain)
        with pytest.raises(ConfigError, match=r"session\(\): api .* not on loopback"):
            tokens.session(holder, network=remote)
        merchants = tokens.add_tenants("merchants", api=plain.api, network=remote)
        with pytest.raises(ConfigError, match=r"token_url .* not on loopback"):
            merchants.add("m-1", plain)
        assert 0 == len(merchants)
        # The opt-out, and HTTPS, are not refused.
        opted = attrs.evolve(plain, name="opted", allow_insecure_http=True)
        tokens.session(tokens.add(opted), network=remote)
        secure = provider("https://127.0.0.1:9")
        tokens.session(tokens.add(attrs.evolve(secure, name="secure")), network=remote)


async def test_a_remote_proxy_from_the_environment_is_refused_when_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_env_proxy(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", REMOTE_PROXY)
    monkeypatch.setenv("http_proxy", REMOTE_PROXY)
    from_env = Network(trust_env=True)
    async with serve(answer) as server:
        # The token endpoint: the refresher's failure is a ConfigError, not retried.
        async with TokenManager(network=from_env) as tokens:
            with pytest.raises(TokenUnavailableError) as caught:
                await tokens.add(provider(server.url)).get(timeout=AT_ONCE)
        assert isinstance(caught.value.last_error, ConfigError)
        assert "token_url" in str(caught.value.last_error)
        # The API: the token comes directly, the API request is refused before it is sent.
        async with TokenManager() as tokens:
            holder = tokens.add(provider(server.url))
            await holder.get(timeout=AT_ONCE)
            async with tokens.session(holder, network=from_env) as http:
                with pytest.raises(ConfigError, match=r"api .* not on loopback"):
                    await http.get(server.url / "api" / "pay")
            # A tenant's request, through its own middlewares, the same.
            merchants = tokens.add_tenants("merchants", api=server.url / "api")
            m1 = merchants.add("m-1", provider(server.url))
            async with tokens.session(merchants, network=from_env) as http:
                with pytest.raises(ConfigError, match=r"api .* not on loopback"):
                    await http.get(server.url / "api" / "pay", middlewares=m1.middlewares)
            monkeypatch.delenv("HTTP_PROXY")
            monkeypatch.delenv("http_proxy")
            async with tokens.session(holder) as http:  # a per-request proxy, the same
                with pytest.raises(ConfigError, match=r"api .* not on loopback"):
                    await http.get(server.url / "api" / "pay", proxy=REMOTE_PROXY)
    assert {"/token"} == {s.path for s in server.seen}  # no API request went out


async def test_plain_http_through_a_loopback_proxy_from_the_environment_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_env_proxy(monkeypatch)
    async with (
        serve(answer) as server,
        forward_proxy((PROXY_USER, PROXY_PASSWORD)) as proxy,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with_credentials())
        monkeypatch.setenv("http_proxy", proxy.url_with_credentials())
        from_env = Network(trust_env=True)
        async with TokenManager(network=from_env) as tokens:
            holder = tokens.add(provider(server.url))
            async with (
                tokens.session(holder, network=from_env) as http,
                http.get(server.url / "api" / "pay") as resp,
            ):
                body = await resp.json()
    assert {"auth": "Bearer tok-proxied"} == body
    assert [f"{server.url}/token", f"{server.url}/api/pay"] == proxy.forwarded
    assert 0 == proxy.refused


# The httpx adapter: BearerAuth.client() knows its proxies when it is built.


async def test_httpx_client_refuses_plain_http_through_a_remote_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    httpx = pytest.importorskip("httpx")
    from aiopay_auth.httpx import BearerAuth

    no_env_proxy(monkeypatch)
    async with serve(answer) as server, TokenManager() as tokens:
        holder = tokens.add(provider(server.url))
        await holder.get(timeout=AT_ONCE)
        auth = BearerAuth(holder)
        not_on_loopback = r"BearerAuth.client\(\): api .* not on loopback"
        # From the environment (trust_env, httpx's default), an explicit proxy=, a mount.
        monkeypatch.setenv("HTTP_PROXY", REMOTE_PROXY)
        monkeypatch.setenv("http_proxy", REMOTE_PROXY)
        with pytest.raises(ConfigError, match=not_on_loopback):
            auth.client()
        with pytest.raises(ConfigError, match=not_on_loopback):
            auth.client(limits=httpx.Limits(max_connections=None))  # no gate: the same
        monkeypatch.setenv("ALL_PROXY", REMOTE_PROXY)
        monkeypatch.setenv("all_proxy", REMOTE_PROXY)
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.delenv(name)
        with pytest.raises(ConfigError, match=not_on_loopback):
            auth.client()
        no_env_proxy(monkeypatch)
        with pytest.raises(ConfigError, match=not_on_loopback):
            auth.client(proxy=REMOTE_PROXY)
        mounts = {"http://": httpx.AsyncHTTPTransport(proxy=REMOTE_PROXY)}
        with pytest.raises(ConfigError, match=not_on_loopback):
            auth.client(mounts=mounts, limit=10)
        # Not refused: no proxy for the API (NO_PROXY, trust_env=False), or the opt-out.
        monkeypatch.setenv("HTTP_PROXY", REMOTE_PROXY)
        monkeypatch.setenv("http_proxy", REMOTE_PROXY)
        async with auth.client(trust_env=False) as http:
            assert {"auth": "Bearer tok-proxied"} == (
                await http.get(f"{server.url}/api/pay")
            ).json()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        async with auth.client() as http:
            assert {"auth": "Bearer tok-proxied"} == (
                await http.get(f"{server.url}/api/pay")
            ).json()
        insecure = attrs.evolve(provider(server.url), name="opt-out", allow_insecure_http=True)
        no_env_proxy(monkeypatch)
        BearerAuth(tokens.add(insecure)).client(proxy=REMOTE_PROXY)  # built, never used
    assert {"/token", "/api/pay"} == {s.path for s in server.seen}
    assert 2 == sum(s.path == "/api/pay" for s in server.seen)  # never through 192.0.2.1


async def test_httpx_client_sends_plain_http_through_a_loopback_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("httpx")
    from aiopay_auth.httpx import BearerAuth

    no_env_proxy(monkeypatch)
    async with (
        serve(answer) as server,
        forward_proxy() as proxy,
        TokenManager() as tokens,
    ):
        holder = tokens.add(provider(server.url))
        await holder.get(timeout=AT_ONCE)
        monkeypatch.setenv("HTTP_PROXY", str(proxy.url))
        monkeypatch.setenv("http_proxy", str(proxy.url))
        async with BearerAuth(holder).client() as http:
            resp = await http.get(f"{server.url}/api/pay")
    assert {"auth": "Bearer tok-proxied"} == resp.json()
    assert [f"{server.url}/api/pay"] == proxy.forwarded
