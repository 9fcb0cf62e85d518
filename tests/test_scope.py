"""The one scope rule (``_scope.py``): which URLs may carry a provider's token.

``Provider.in_scope`` and :class:`BearerAuth`'s table both decide with
:meth:`Scope.holds_path` after an origin match; every check here is made
through the code a request meets (``BearerAuth.holder_for``) as well as
through the profile, against a statement of the rule written
differently (path segments, not string prefixes).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from aiopay_auth import BearerAuth, Provider, TokenHolder
from aiopay_auth._scope import Scope, ScopeTable, in_scope


def provider(api: list[str], name: str = "p") -> Provider:
    return Provider(
        name=name,
        token_url="https://auth.example/token",
        api=api,
        client_id="id",
        client_secret="secret",
        allow_insecure_http=True,
    )


def oracle(api: str, url: str) -> bool:
    """The rule, restated: same scheme, host and port; the API's path segments lead the URL's."""
    scope, target = URL(api), URL(url)
    if (scope.scheme, scope.host, scope.port) != (target.scheme, target.host, target.port):
        return False
    prefix = scope.raw_path.rstrip("/").split("/")
    return target.raw_path.split("/")[: len(prefix)] == prefix


def key(api: str) -> tuple[str, str | None, int | None, str]:
    """One scope, however it is written: scheme, host, port and path without trailing ``/``."""
    url = URL(api)
    return (url.scheme, url.host, url.port, url.raw_path.rstrip("/"))


def stamps(api: list[str], url: str) -> bool:
    """Whether the middleware stamps a request to *url* with the token of a provider of *api*."""
    holder = TokenHolder(provider(api))
    return BearerAuth(holder).holder_for(URL(url)) is holder


RULE = [
    pytest.param("https://h.example/api", "https://h.example/api", True, id="exact"),
    pytest.param("https://h.example/api", "https://h.example/api/", True, id="exact-slash"),
    pytest.param("https://h.example/api", "https://h.example/api/x/y", True, id="below"),
    pytest.param("https://h.example/api/", "https://h.example/api", True, id="api-slash"),
    pytest.param("https://h.example/api", "https://h.example/apix", False, id="sibling"),
    pytest.param("https://h.example/api", "https://h.example/ap", False, id="shorter"),
    pytest.param("https://h.example/api", "https://h.example/", False, id="root"),
    pytest.param("https://h.example/api", "https://h.example/x/api", False, id="not-leading"),
    pytest.param("https://h.example/api", "https://h.example/api?q=1", True, id="query"),
    pytest.param("https://h.example/api", "https://h.example/api%2Fx", False, id="encoded-slash"),
    pytest.param("https://h.example/a%2Fb", "https://h.example/a%2Fb/c", True, id="encoded-api"),
    pytest.param("https://h.example/a%2Fb", "https://h.example/a/b/c", False, id="decoded"),
    pytest.param("https://h.example", "https://h.example/anything", True, id="origin"),
    pytest.param("https://h.example/", "https://h.example", True, id="origin-root"),
    pytest.param("https://h.example/api", "https://h.example:443/api", True, id="default-port"),
    pytest.param("https://h.example:443/api", "https://h.example/api", True, id="port-written"),
    pytest.param("https://h.example/api", "https://h.example:8443/api", False, id="other-port"),
    pytest.param("https://h.example/api", "http://h.example/api", False, id="other-scheme"),
    pytest.param("https://h.example/api", "https://H.EXAMPLE/api", True, id="host-case"),
    pytest.param("https://h.example/api", "https://x.h.example/api", False, id="subdomain"),
    pytest.param("https://h.example/api", "https://h.example.x/api", False, id="suffix-host"),
    pytest.param("http://127.0.0.1:8080/api", "http://localhost:8080/api", False, id="loopback"),
]


@pytest.mark.parametrize(("api", "url", "expected"), RULE)
def test_the_scope_rule(api: str, url: str, expected: bool) -> None:
    assert expected == oracle(api, url)  # the table states the rule
    assert expected == Scope(URL(api)).holds(URL(url))
    assert expected == in_scope([URL(api)], URL(url))
    assert expected == provider([api]).in_scope(URL(url))
    assert expected == stamps([api], url)


# Few values, so that origins and prefixes collide often.
_ORIGINS = st.sampled_from(
    [
        "https://a.example",
        "https://a.example:443",
        "https://A.example",
        "https://a.example:8443",
        "http://a.example",
        "http://a.example:80",
        "https://b.example",
        "http://127.0.0.1:8080",
    ]
)
_SEGMENTS = st.lists(st.sampled_from(["api", "apix", "ap", "v1", "", "a%2Fb", "a"]), max_size=3)


@st.composite
def urls(draw: st.DrawFn) -> str:
    path = "/".join(draw(_SEGMENTS))
    return f"{draw(_ORIGINS)}/{path}{draw(st.sampled_from(['', '/']))}"


@settings(max_examples=300, deadline=None)
@given(api=st.lists(urls(), min_size=1, max_size=3), url=urls())
def test_a_provider_and_the_middleware_apply_one_rule(api: list[str], url: str) -> None:
    api = list({key(scope): scope for scope in api}.values())  # BearerAuth refuses a scope twice
    expected = any(oracle(scope, url) for scope in api)
    assert expected == provider(api).in_scope(URL(url))
    assert expected == stamps(api, url)


@settings(max_examples=300, deadline=None)
@given(scopes=st.lists(urls(), min_size=1, max_size=6), url=urls())
def test_the_table_gives_a_url_to_its_most_specific_scope(scopes: list[str], url: str) -> None:
    table: ScopeTable[str] = ScopeTable()
    owners: dict[str, str] = {}  # each distinct scope's owner: the first to claim it
    for index, scope in enumerate(scopes):
        other = table.claim(URL(scope), f"owner-{index}")
        same = [s for s in owners if key(s) == key(scope)]
        assert (other is None) == (not same)
        if other is None:
            owners[scope] = f"owner-{index}"
        else:
            assert other == owners[same[0]]
    holding = [s for s in owners if oracle(s, url)]
    found = table.find(URL(url))
    if not holding:
        assert found is None
    else:
        longest = max(holding, key=lambda s: len(URL(s).raw_path.rstrip("/")))
        assert owners[longest] == found


def test_one_scope_written_two_ways_is_claimed_once() -> None:
    table: ScopeTable[str] = ScopeTable()
    assert table.claim(URL("https://h.example/api/"), "first") is None
    assert "first" == table.claim(URL("https://h.example:443/api"), "second")
    assert table.claim(URL("https://h.example/api/v1"), "third") is None
    assert "first" == table.find(URL("https://h.example/api/x"))
    assert "third" == table.find(URL("https://h.example/api/v1/x"))
    assert table.find(URL("https://h.example/v1")) is None


def test_a_scope_shows_its_origin_with_the_port_and_its_prefix() -> None:
    # What a debugger or a log of the table shows: the port yarl fills in, no trailing slash.
    assert "<Scope https://h.example:443/api>" == repr(Scope(URL("https://h.example/api/")))
    assert "<Scope http://127.0.0.1:8080>" == repr(Scope(URL("http://127.0.0.1:8080/")))
