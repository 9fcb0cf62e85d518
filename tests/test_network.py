"""``Network``: validation, the connect and read bounds, and how ``session()`` takes it."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import attrs
import pytest
from aiohttp import web
from yarl import URL

from aiopay_auth import Network, Provider, RefreshPolicy, TokenManager
from aiopay_auth.exceptions import ConfigError
from aiopay_auth.testing import blackhole

from .helpers import eventually
from .loopback import serve


pytestmark = pytest.mark.anyio


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"proxy": "socks5://u:hunter2-pw@127.0.0.1:1080"}, "proxy"),
        ({"proxy": "http://u:hunter2-pw@127.0.0.1:3128/path?key=hunter2-pw"}, "proxy"),
        ({"proxy": "127.0.0.1:3128"}, "proxy"),
        ({"proxy": 3128}, "proxy"),
        ({"trust_env": "yes"}, "trust_env"),
        ({"ssl": True}, "ssl"),
        ({"ssl": unverified()}, "ssl"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": float("inf")}, "read_timeout"),
        ({"read_timeout": "5"}, "read_timeout"),
    ],
)
def test_bad_network_options_are_refused_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Network(**kwargs)
    assert field in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        pytest.param("http://u:hunter2-pw@h:99999", "its port is not in 1-65535", id="port-range"),
        pytest.param("http://u:hunter2-pw@h:abc", "its port is not a number", id="port-text"),
        pytest.param("http://u:hunter2-pw@h:0", "its port is not in 1-65535", id="port-0"),
        pytest.param("http://u:hunter2-pw@:3128", "it has no host", id="no-host"),
        pytest.param("http://u:hunter2-pw@[::1", "its host is not a valid IPv6 address", id="ipv6"),
    ],
)
def test_a_proxy_that_does_not_parse_is_a_config_error_naming_it(proxy: str, reason: str) -> None:
    # Red team pass 11: yarl's bare ValueError came out, naming no field.
    with pytest.raises(ConfigError) as caught:
        Network(proxy=proxy)
    assert f"network: proxy must be an absolute http:// URL (host and port): {reason}" == str(
        caught.value
    )
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_a_context_that_does_not_check_the_hostname_is_refused() -> None:
    # Red team pass 11: CERT_REQUIRED without check_hostname took a valid
    # certificate for any name, where the docs promise a TokenTLSError.
    context = ssl.create_default_context()
    context.check_hostname = False
    assert ssl.CERT_REQUIRED == context.verify_mode
    with pytest.raises(ConfigError) as caught:
        Network(ssl=context)
    assert "network: ssl must check the server's hostname (check_hostname True)" == str(
        caught.value
    )
    with pytest.raises(ConfigError, match="check_hostname"):
        attrs.evolve(Network(), ssl=context)
    context.check_hostname = True
    assert context is Network(ssl=context).ssl


def test_the_proxy_password_never_shows() -> None:
    network = Network(proxy="http://user:hunter2-pw@proxy.internal:3128")
    assert "hunter2" not in repr(network) + str(attrs.asdict(network)) + str(network.proxy)
    assert "proxy='http://proxy.internal:3128'" in repr(network)
    assert network != Network(proxy="http://user:other-pw@proxy.internal:3128")
    # evolve() keeps the credentials with their proxy, never takes them elsewhere.
    assert network == attrs.evolve(network, read_timeout=None)
    assert attrs.evolve(network, read_timeout=5)._proxy_secret == network._proxy_secret
    moved = attrs.evolve(network, proxy="http://other.internal:3128")
    assert moved._proxy_secret is None


async def first_failure(tokens: TokenManager, provider: Provider) -> tuple[float, str]:
    """Seconds until the provider's first token call failed, and its error."""
    holder = tokens.add(provider)
    started = time.monotonic()
    await eventually(lambda: holder.health().failures >= 1, within=FETCH_TIMEOUT)
    return time.monotonic() - started, str(holder.health().last_error)


def slow_provider(url: URL) -> Provider:
    return Provider(
        name="slow", token_url=url / "token", api=url / "api", client_id="c", client_secret="s"
    )


FETCH_TIMEOUT = 20.0
POLICY = RefreshPolicy(fetch_timeout=FETCH_TIMEOUT)


async def test_read_timeout_bounds_a_silent_token_endpoint_within_the_fetch_timeout() -> None:
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=500)

    network = Network(read_timeout=0.2)
    async with serve(silent) as server, TokenManager(policy=POLICY, network=network) as tokens:
        elapsed, error = await first_failure(tokens, slow_provider(server.url))
        release.set()
    # Bounded by the read timeout, not the 20 s fetch timeout.
    assert "timed out" in error
    assert 0.2 <= elapsed < FETCH_TIMEOUT / 2


async def test_connect_timeout_bounds_a_token_endpoint_nobody_answers() -> None:
    network = Network(connect_timeout=0.2)
    with blackhole() as url:
        async with TokenManager(policy=POLICY, network=network) as tokens:
            elapsed, error = await first_failure(tokens, slow_provider(url))
    assert "timed out" in error
    assert 0.2 <= elapsed < FETCH_TIMEOUT / 2


async def test_connect_timeout_bounds_an_api_request_on_session_network() -> None:
    connect_timeout = 0.2
    with blackhole() as url:
        async with TokenManager() as tokens:
            http = tokens.session(network=Network(connect_timeout=connect_timeout))
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await http.get(url)
            elapsed = time.monotonic() - started
    # aiohttp's own default would wait 30 s for the socket to connect.
    assert connect_timeout <= elapsed < 10


@pytest.mark.parametrize(
    ("network", "kwargs"),
    [
        (Network(proxy="http://127.0.0.1:3128"), {"proxy": "http://127.0.0.1:3129"}),
        (Network(trust_env=True), {"trust_env": False}),
        (Network(read_timeout=1), {"timeout": None}),
    ],
)
async def test_session_refuses_an_option_given_twice(
    network: Network, kwargs: dict[str, Any]
) -> None:
    async with TokenManager() as tokens:
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            tokens.session(network=network, **kwargs)


async def test_network_must_be_a_network() -> None:
    with pytest.raises(ConfigError, match=r"network must be an aiopay_auth\.Network"):
        TokenManager(network="http://proxy")  # type: ignore[arg-type]
    async with TokenManager() as tokens:
        with pytest.raises(ConfigError, match=r"network must be an aiopay_auth\.Network"):
            tokens.session(network={"proxy": "http://proxy"})  # type: ignore[arg-type]
