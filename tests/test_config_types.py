"""Bad config: a typed ConfigError naming the field, at construction (red team s05, s16)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from aiopay_auth import (
    BearerAuth,
    ClientAssertion,
    ConfigError,
    FairPool,
    Network,
    Provider,
    RefreshPolicy,
    Secret,
    TokenManager,
)
from aiopay_auth._gate import FairGate


SECRET = "s3cr/et+Val:ue-0123456789"


def provider(**overrides: Any) -> Provider:
    kwargs: dict[str, Any] = {
        "name": "acme",
        "token_url": "http://127.0.0.1:9/token",
        "api": "http://127.0.0.1:9/api",
        "client_id": "client-id",
        "client_secret": SECRET,
    }
    kwargs.update(overrides)
    return Provider(**kwargs)


def call(build: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[[], object]:
    """Build later, with arguments of any type (untyped callers)."""
    return lambda: build(*args, **kwargs)


def _policy(**kwargs: Any) -> Callable[[], object]:
    return lambda: RefreshPolicy(**kwargs)


_NUMERIC = [a.name for a in RefreshPolicy.__attrs_attrs__]
_BAD_NUMBERS: list[object] = ["5", None, True, math.nan, math.inf, -math.inf]

CASES: list[tuple[str, str, Callable[[], object]]] = [
    ("client_id-int", "client_id", lambda: provider(client_id=12345)),
    ("client_secret-int", "client_secret", lambda: provider(client_secret=12345)),
    ("client_secret-bytes", "client_secret", lambda: provider(client_secret=SECRET.encode())),
    ("default_lifetime-str", "default_lifetime", lambda: provider(default_lifetime="300")),
    ("default_lifetime-nan", "default_lifetime", lambda: provider(default_lifetime=math.nan)),
    ("default_lifetime-bool", "default_lifetime", lambda: provider(default_lifetime=True)),
    ("envelope-str", "envelope", lambda: provider(envelope="x")),
    ("api-int", "api", lambda: provider(api=443)),
    ("api-none-entry", "api", lambda: provider(api=["http://127.0.0.1:9/api", None])),
    ("token_url-none", "token_url", lambda: provider(token_url=None)),
    ("token_url-bytes", "token_url", lambda: provider(token_url=b"http://127.0.0.1:9/t")),
    ("name-int", "name", lambda: provider(name=7)),
    ("scope-list", "scope", lambda: provider(scope=["a", "b"])),
    ("password-int", "password", lambda: provider(password=1234, username="u")),
    ("refresh_token-int", "refresh_token", lambda: provider(refresh_token=1234)),
    ("extra_headers-str", "extra_headers", lambda: provider(extra_headers="X-Key: v")),
    (
        "extra_headers-bytes-value",
        "extra_headers",
        lambda: provider(extra_headers={"X-Key": SECRET.encode()}),
    ),
    ("extra_headers-int-name", "extra_headers", lambda: provider(extra_headers={1: SECRET})),
    ("extra_headers-not-pairs", "extra_headers", lambda: provider(extra_headers=[SECRET])),
    ("extra_fields-bytes", "extra_fields", lambda: provider(extra_fields=b"k=v")),
    ("allow_insecure_http-str", "allow_insecure_http", lambda: provider(allow_insecure_http="no")),
    *[
        (f"policy-{name}-{bad!r}", name, _policy(**{name: bad}))
        for name in _NUMERIC
        for bad in _BAD_NUMBERS
    ],
    ("token_pool_size-negative", "token_pool_size", call(TokenManager, token_pool_size=-1)),
    ("token_pool_size-str", "token_pool_size", call(TokenManager, token_pool_size="3")),
    ("manager-policy", "policy", call(TokenManager, policy={"wait_timeout": 5})),
    ("manager-clock", "clock", call(TokenManager, clock=1.0)),
    ("manager-token_source", "token_source", call(TokenManager, token_source="x")),
    ("FairGate-str", "FairGate size", call(FairGate, "3")),
    ("FairGate-bool", "FairGate size", call(FairGate, True)),
    ("FairGate-float", "FairGate size", call(FairGate, 2.5)),
    ("BearerAuth-str", "BearerAuth holders", call(BearerAuth, "x")),
    ("Network-connect_timeout", "connect_timeout", call(Network, connect_timeout="5")),
    ("Network-read_timeout-nan", "read_timeout", call(Network, read_timeout=math.nan)),
    ("Network-trust_env", "trust_env", call(Network, trust_env="yes")),
    ("Network-proxy-int", "proxy", call(Network, proxy=3128)),
    # Red team pass 2.
    ("ClientAssertion-kid-int", "kid", call(ClientAssertion, kid=5)),
    ("ClientAssertion-audience-int", "audience", call(ClientAssertion, audience=5)),
    ("ClientAssertion-key-int", "key", call(ClientAssertion, key=5)),
    ("FairPool-str", "FairPool auth", call(FairPool, "x")),
    # Red team pass 11: True was taken as a 1-second lifetime.
    (
        "ClientAssertion-lifetime-bool",
        "ClientAssertion.lifetime",
        call(ClientAssertion, lifetime=True),
    ),
    (
        "ClientAssertion-lifetime-str",
        "ClientAssertion.lifetime",
        call(ClientAssertion, lifetime="60"),
    ),
]


@pytest.mark.parametrize(("field", "build"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_a_config_error_naming_the_field(
    field: str, build: Callable[[], object]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert isinstance(caught.value, ValueError)  # what callers caught before
    message = str(caught.value)
    assert field in message
    assert SECRET not in message
    assert repr(SECRET.encode()) not in message


def test_a_secret_header_value_passes_and_is_kept_as_given() -> None:
    profile = provider(extra_headers={"X-Key": Secret(SECRET), "X-Plain": "v"})
    assert profile.extra_headers == (("X-Key", Secret(SECRET)), ("X-Plain", "v"))


SESSION_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("limit-str", "limit", {"limit": "10"}),
    ("limit-bool", "limit", {"limit": True}),
    ("limit_per_host-str", "limit_per_host", {"limit_per_host": "5"}),
    ("limit_per_host-negative", "limit_per_host", {"limit_per_host": -1}),
    ("timeout-int", "timeout", {"timeout": 5}),
    # aiohttp's own errors: the arguments named, its words (which may quote a value) not.
    ("aiohttp-headers", "headers", {"headers": f"Authorization: {SECRET}"}),
    ("aiohttp-base_url", "base_url", {"base_url": 5}),
]


@pytest.mark.parametrize(
    ("field", "kwargs"), [c[1:] for c in SESSION_CASES], ids=[c[0] for c in SESSION_CASES]
)
@pytest.mark.anyio
async def test_bad_session_arguments_are_config_errors_naming_them(
    field: str, kwargs: dict[str, Any]
) -> None:
    async with TokenManager() as tokens:
        holder = tokens.add(provider())
        with pytest.raises(ConfigError) as caught:
            tokens.session(holder, **kwargs)
        with pytest.raises(ConfigError, match="a holder"):
            tokens.middleware("x")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="provider"):
            tokens.add("x")  # type: ignore[arg-type]
    assert field in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None  # aiohttp's error is not kept at all


@pytest.mark.parametrize("timeout", ["5", b"5", math.nan, True, None])
@pytest.mark.anyio
async def test_bad_wait_bounds_and_holders_are_config_errors(timeout: object) -> None:
    async with TokenManager() as tokens:
        holder = tokens.add(provider())
        if timeout is None:
            with (
                pytest.raises(ConfigError, match="a holder"),
                pytest.warns(DeprecationWarning, match="deprecated"),
            ):
                await tokens.token("x")  # type: ignore[arg-type]
            return
        with pytest.raises(ConfigError, match="timeout"):
            await holder.get(timeout)  # type: ignore[arg-type]
        with (
            pytest.raises(ConfigError, match="timeout"),
            pytest.warns(DeprecationWarning, match="deprecated"),
        ):
            await tokens.token(holder, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_session_limit_per_host_is_a_per_host_bound() -> None:
    async with TokenManager() as tokens:
        holder = tokens.add(provider())
        async with tokens.session(holder, limit=10, limit_per_host=2) as http:
            connector = http.connector
            assert connector is not None
            assert (10, 2) == (connector.limit, connector.limit_per_host)


def test_a_bool_is_not_an_assertion_lifetime() -> None:
    # Red team pass 11: ClientAssertion(lifetime=True) signed 1-second assertions.
    for bad in (True, False):
        with pytest.raises(ConfigError) as caught:
            ClientAssertion(lifetime=bad)
        assert "ClientAssertion.lifetime must be a number (an int or a float), not a bool" == str(
            caught.value
        )
    with pytest.raises(ConfigError, match=r"ClientAssertion\.lifetime"):
        attrs.evolve(ClientAssertion(), lifetime=True)
    assert 30 == ClientAssertion(lifetime=30).lifetime
