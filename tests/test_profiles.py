"""Tests of provider profile validation and API scoping (``Provider`` and ``providers.*``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from yarl import URL

from aiopay_auth import BearerAuth, Provider, Secret, TokenHolder
from aiopay_auth.exceptions import AuthError, ConfigError
from aiopay_auth.providers import cm, generic, oro, payme, vonage


SECRET = "client-secret-value-1"
PASSWORD = "resource-owner-password-1"


def make(**overrides: Any) -> Provider:
    fields: dict[str, Any] = {
        "name": "test",
        "token_url": "https://auth.example/token",
        "api": "https://api.example/v1",
        "client_id": "client-1",
        "client_secret": SECRET,
    }
    fields.update(overrides)
    return Provider(**fields)


def stamped(provider: Provider, url: str) -> bool:
    """Whether a request to *url* carries *provider*'s token.

    Asked of both places the scope rule is used: ``Provider.in_scope`` and
    the table of the :class:`BearerAuth` that stamps requests; they must
    agree.
    """
    by_profile = provider.in_scope(URL(url))
    by_middleware = BearerAuth(TokenHolder(provider)).holder_for(URL(url)) is not None
    assert by_profile == by_middleware, url
    return by_profile


# ---------------------------------------------------------------------------
# Provider(...) validation


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param({"name": ""}, "name must not be empty", id="empty-name"),
        pytest.param({"client_id": ""}, "client_id must not be empty", id="empty-client_id"),
        pytest.param(
            {"client_secret": ""}, "client_secret must not be empty", id="empty-client_secret"
        ),
        pytest.param(
            {"grant_type": "password", "password": PASSWORD},
            "the password grant needs username and password",
            id="password-grant-without-username",
        ),
        pytest.param(
            {"grant_type": "password", "username": "alice"},
            "the password grant needs username and password",
            id="password-grant-without-password",
        ),
        pytest.param(
            {"grant_type": "password", "username": "alice", "password": ""},
            "the password grant needs username and password",
            id="password-grant-empty-password",
        ),
        pytest.param({"grant_type": "refresh_token"}, "grant_type must be one of", id="grant"),
        pytest.param({"grant_type": "implicit"}, "grant_type must be one of", id="implicit"),
        pytest.param({"client_auth": "header"}, "client_auth must be one of", id="auth"),
        pytest.param({"encoding": "xml"}, "encoding must be one of", id="encoding"),
        pytest.param(
            {"client_auth": "basic", "encoding": "json"},
            "client_auth='basic' goes with encoding='form'",
            id="basic-with-json",
        ),
        pytest.param(
            {"token_url": "http://auth.example/token"},
            "token_url http://auth.example/token uses plain http to a non-loopback host",
            id="http-token_url",
        ),
        pytest.param(
            {"api": "http://api.example/v1"},
            "api http://api.example/v1 uses plain http to a non-loopback host",
            id="http-api",
        ),
        pytest.param(
            {"token_url": "http://localhost.evil.example/token"},
            "plain http to a non-loopback host",
            id="http-localhost-lookalike",
        ),
        pytest.param(
            {"token_url": "http://127.0.0.1.nip.io/token"},
            "plain http to a non-loopback host",
            id="http-loopback-ip-lookalike",
        ),
        pytest.param(
            {"token_url": "https://user:pass@auth.example/token"},
            "token_url must not carry credentials in the URL",
            id="credentials-in-token_url",
        ),
        pytest.param(
            {"token_url": "https://user@auth.example/token"},
            "token_url must not carry credentials in the URL",
            id="user-in-token_url",
        ),
        pytest.param(
            {"api": "https://user:pass@api.example/v1"},
            "api must not carry credentials in the URL",
            id="credentials-in-api",
        ),
        pytest.param({"api": ()}, "api must name at least one URL", id="api-missing"),
        pytest.param({"api": []}, "api must name at least one URL", id="api-empty-list"),
        pytest.param({"api": "/v1"}, "api must be an absolute http(s) URL", id="api-relative"),
        pytest.param(
            {"token_url": "ftp://auth.example/token"},
            "token_url must be an absolute http(s) URL",
            id="ftp-token_url",
        ),
        pytest.param(
            {"token_url": "auth.example/token"},
            "token_url must be an absolute http(s) URL",
            id="token_url-without-scheme",
        ),
        pytest.param(
            {"api": "https://api.example/v1?x=1"}, "must not have a query", id="api-query"
        ),
        pytest.param(
            {"api": "https://api.example/v1#frag"}, "must not have a query", id="api-fragment"
        ),
        pytest.param({"default_lifetime": 0}, "default_lifetime", id="zero-default_lifetime"),
        pytest.param({"default_lifetime": 86401}, "default_lifetime", id="huge-default_lifetime"),
    ],
)
def test_provider_rejects_bad_config(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make(**overrides)
    assert problem in str(caught.value)
    assert overrides.get("name", "test") == caught.value.provider
    assert not caught.value.retryable


HIDDEN = "hidden-value-9"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param(
            {"extra_headers": {"X-Key": f"{HIDDEN}\r\nX-Injected: 1"}},
            "extra_headers 'X-Key': the value has characters not allowed",
            id="crlf-in-value",
        ),
        pytest.param(
            {"extra_headers": {"X-Key": Secret(f"{HIDDEN}\n")}},
            "extra_headers 'X-Key': the value has characters not allowed",
            id="lf-in-secret-value",
        ),
        pytest.param(
            {"extra_headers": {"X-Key": f"{HIDDEN}\x00"}},
            "extra_headers 'X-Key': the value",
            id="nul-in-value",
        ),
        pytest.param(
            {"extra_headers": {"X-Key": f"{HIDDEN}é"}}, "extra_headers 'X-Key'", id="non-ascii"
        ),
        pytest.param(
            {"extra_headers": {"X-Key": f" {HIDDEN}"}}, "extra_headers 'X-Key'", id="leading-space"
        ),
        pytest.param(
            {"extra_headers": {f"X-{HIDDEN}\r\nX-Evil": "v"}},
            "extra_headers entry 0: the name is not a valid HTTP header name",
            id="crlf-in-name",
        ),
        pytest.param(
            {"extra_headers": {"X-Ok": "v", f"Bearer {HIDDEN}": "v"}},
            "extra_headers entry 1: the name is not a valid HTTP header name",
            id="space-in-name",
        ),
        pytest.param(
            {"extra_headers": {"": "v"}}, "extra_headers entry 0: the name", id="empty-name"
        ),
        pytest.param(
            {"extra_headers": [("X-Key", "a"), ("x-key", HIDDEN)]},
            "extra_headers 'x-key' is given twice",
            id="duplicate-header",
        ),
        pytest.param(
            {"extra_headers": {"Content-Type": "text/plain"}},
            "extra_headers 'Content-Type' is a header the SDK sets itself",
            id="own-header",
        ),
        pytest.param(
            {"extra_headers": {"Authorization": HIDDEN}, "client_auth": "basic"},
            "extra_headers 'Authorization' is a header the SDK sets itself",
            id="authorization-with-basic",
        ),
        pytest.param(
            {"extra_fields": {"": HIDDEN}},
            "extra_fields entry 0: the name is empty or has control characters",
            id="empty-field-name",
        ),
        pytest.param(
            {"extra_fields": {"ok": "v", "bad\nname": HIDDEN}},
            "extra_fields entry 1: the name is empty or has control characters",
            id="control-in-field-name",
        ),
        pytest.param(
            {"extra_fields": [("a", "1"), ("a", HIDDEN)]},
            "extra_fields 'a' is given twice",
            id="duplicate-field",
        ),
    ],
)
def test_bad_extra_headers_and_fields_are_refused_without_quoting_values(
    overrides: dict[str, Any], problem: str
) -> None:
    # Before, these passed construction and aiohttp raised ValueError inside
    # every token request, forever.
    with pytest.raises(ConfigError) as caught:
        make(**overrides)
    assert problem in str(caught.value)
    assert HIDDEN not in str(caught.value)
    assert HIDDEN not in repr(caught.value)


def test_valid_extra_headers_and_fields_are_accepted() -> None:
    provider = make(
        extra_headers={"X-Api-Key": Secret("k e y"), "ALG-API-VERSION": "1", "X-Empty": ""},
        extra_fields={"audience": "https://a.example", "assertion": Secret("a\nb")},
        client_auth="body",
    )
    assert ("X-Api-Key", Secret("k e y")) in provider.extra_headers
    assert 3 == len(provider.extra_headers)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        make(client_id="", client_secret="", api=())
    message = str(caught.value)
    for problem in ("client_id must not be empty", "client_secret", "api must name"):
        assert problem in message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://user:topsecret-pw@auth.example/token", id="ftp"),
        pytest.param("https://user:topsecret-pw@auth.example/token", id="https"),
        pytest.param("http://user:topsecret-pw@auth.example/token", id="http"),
    ],
)
def test_config_error_never_quotes_url_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make(token_url=url)
    assert "topsecret-pw" not in str(caught.value)
    assert "topsecret-pw" not in repr(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"api": "https://api.example/v1?api_key=topsecret-key"}, id="api-query"),
        pytest.param({"api": "https://api.example/v1#topsecret-key"}, id="api-fragment"),
        pytest.param({"api": "http://api.example/v1?key=topsecret-key"}, id="http-api-query"),
        pytest.param({"token_url": "http://auth.example/t?key=topsecret-key"}, id="http-token"),
        pytest.param({"token_url": "/token?key=topsecret-key"}, id="relative-token"),
    ],
)
def test_config_error_never_quotes_a_query_or_fragment(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        make(**overrides)
    assert "topsecret-key" not in str(caught.value)
    assert "topsecret-key" not in repr(caught.value)
    assert "example" in str(caught.value) or "/token" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:8080/token", id="ipv4"),
        pytest.param("http://127.5.6.7/token", id="ipv4-127/8"),
        pytest.param("http://localhost:9999/token", id="localhost"),
        pytest.param("http://[::1]:9999/token", id="ipv6"),
    ],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    provider = make(token_url=url, api=url.rsplit("/", 1)[0] + "/api")
    assert URL(url) == provider.token_url


def test_plain_http_to_remote_host_with_opt_in() -> None:
    provider = make(
        token_url="http://auth.example/token",
        api="http://api.example/v1",
        allow_insecure_http=True,
    )
    assert "http" == provider.token_url.scheme
    assert stamped(provider, "http://api.example/v1/x")


def test_valid_password_grant_accepted() -> None:
    provider = make(grant_type="password", username="alice", password=PASSWORD)
    assert "password" == provider.grant_type
    assert "alice" == provider.username


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="client_id"):
        make(client_id="")
    assert issubclass(ConfigError, ValueError)
    assert not issubclass(ConfigError, AuthError)  # a retrying except AuthError lets it through


# ---------------------------------------------------------------------------
# provider modules reject bad config


def cm_empty_id() -> Provider:
    return cm.provider(client_id="", client_secret=SECRET)


def cm_empty_secret() -> Provider:
    return cm.provider(client_id="id", client_secret="")


def cm_http() -> Provider:
    return cm.provider(client_id="id", client_secret=SECRET, token_url="http://cm.example/t")


def vonage_unknown_region() -> Provider:
    region: Any = "us"
    return vonage.provider(region=region, client_id="id", client_secret=SECRET)


def vonage_unknown_region_with_overrides() -> Provider:
    region: Any = "mars"
    return vonage.provider(
        region=region,
        client_id="id",
        client_secret=SECRET,
        name="vcc",
        token_url="https://emea.cc.vonage.com/Auth/connect/token",
        api="https://emea.api.newvoicemedia.com",
    )


def vonage_password_without_username() -> Provider:
    return vonage.provider(region="nam", client_id="id", client_secret=SECRET, password=PASSWORD)


def vonage_username_without_password() -> Provider:
    return vonage.provider(region="nam", client_id="id", client_secret=SECRET, username="alice")


def payme_unknown_environment() -> Provider:
    environment: Any = "staging"
    return payme.provider(environment=environment, client_id="id", client_secret=SECRET)


def payme_empty_api_version() -> Provider:
    return payme.provider(
        environment="production", client_id="id", client_secret=SECRET, api_version=""
    )


def payme_password_without_username() -> Provider:
    return payme.provider(
        environment="production", client_id="id", client_secret=SECRET, password=PASSWORD
    )


def payme_empty_secret() -> Provider:
    return payme.provider(environment="production", client_id="id", client_secret="")


def oro_unknown_application() -> Provider:
    application: Any = "admin"
    return oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application=application,
    )


def oro_http() -> Provider:
    return oro.provider(app_url="http://shop.example", client_id="id", client_secret=SECRET)


def oro_credentials_in_url() -> Provider:
    return oro.provider(app_url="https://u:p@shop.example", client_id="id", client_secret=SECRET)


def oro_username_without_password() -> Provider:
    return oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application="storefront",
        username="buyer@example.com",
    )


def oro_password_without_username() -> Provider:
    return oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application="storefront",
        password=PASSWORD,
    )


def oro_empty_username() -> Provider:
    return oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application="storefront",
        username="",
        password=PASSWORD,
    )


def generic_basic_json() -> Provider:
    return generic.provider(
        name="g",
        token_url="https://auth.example/token",
        api="https://api.example",
        client_id="id",
        client_secret=SECRET,
        encoding="json",
    )


def generic_no_api() -> Provider:
    return generic.provider(
        name="g",
        token_url="https://auth.example/token",
        api=[],
        client_id="id",
        client_secret=SECRET,
    )


@pytest.mark.parametrize(
    ("factory", "problem", "provider_name"),
    [
        pytest.param(cm_empty_id, "client_id must not be empty", "cm", id="cm-empty-id"),
        pytest.param(cm_empty_secret, "client_secret must not be empty", "cm", id="cm-secret"),
        pytest.param(cm_http, "plain http", "cm", id="cm-http"),
        pytest.param(vonage_unknown_region, "VCC region must be one of", "vonage", id="region"),
        pytest.param(
            vonage_unknown_region_with_overrides,
            "VCC region must be one of",
            "vonage",
            id="region-with-overrides",
        ),
        pytest.param(
            vonage_password_without_username,
            "the password grant needs username and password",
            "vonage-nam",
            id="vonage-password-only",
        ),
        pytest.param(
            vonage_username_without_password,
            "the password grant needs username and password",
            "vonage-nam",
            id="vonage-username-only",
        ),
        pytest.param(
            payme_unknown_environment, "Pay-me environment must be one of", "payme", id="env"
        ),
        pytest.param(
            payme_empty_api_version,
            "api_version must not be empty",
            "payme",
            id="payme-empty-api-version",
        ),
        pytest.param(
            payme_password_without_username,
            "the password grant needs username and password",
            "payme-production",
            id="payme-password-only",
        ),
        pytest.param(
            payme_empty_secret, "client_secret must not be empty", "payme-production", id="pm-s"
        ),
        pytest.param(
            oro_unknown_application,
            "Oro application must be 'backoffice' or 'storefront'",
            "oro",
            id="oro-application",
        ),
        pytest.param(oro_http, "plain http", "oro-backoffice", id="oro-http"),
        pytest.param(
            oro_credentials_in_url, "must not carry credentials", "oro-backoffice", id="oro-creds"
        ),
        pytest.param(
            oro_username_without_password,
            "the password grant needs username and password",
            "oro-storefront",
            id="oro-username-only",
        ),
        pytest.param(
            oro_password_without_username,
            "the password grant needs username and password",
            "oro-storefront",
            id="oro-password-only",
        ),
        pytest.param(
            oro_empty_username,
            "the password grant needs username and password",
            "oro-storefront",
            id="oro-empty-username",
        ),
        pytest.param(
            generic_basic_json,
            "client_auth='basic' goes with encoding='form'",
            "g",
            id="generic-basic-json",
        ),
        pytest.param(generic_no_api, "api must name at least one URL", "g", id="generic-no-api"),
    ],
)
def test_provider_modules_reject_bad_config(
    factory: Callable[[], Provider], problem: str, provider_name: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        factory()
    assert problem in str(caught.value)
    assert provider_name == caught.value.provider
    assert SECRET not in str(caught.value)


# ---------------------------------------------------------------------------
# Vonage regions


@pytest.mark.parametrize("region", ["nam", "emea", "apac"])
def test_vonage_urls_per_region_default_to_the_current_gateway(region: vonage.Region) -> None:
    # docs-vcc.atlassian.net "Resources (Authentication API)": tokens at
    # https://{region}.cc.vonage.com/Auth/connect/token, APIs on the same base URL.
    provider = vonage.provider(region=region, client_id="id", client_secret=SECRET)
    assert f"vonage-{region}" == provider.name
    assert URL(f"https://{region}.cc.vonage.com/Auth/connect/token") == provider.token_url
    assert (URL(f"https://{region}.cc.vonage.com"),) == provider.api
    assert "globalpci" == provider.scope
    assert "form" == provider.encoding
    assert "client_credentials" == provider.grant_type


@pytest.mark.parametrize("region", ["nam", "emea", "apac"])
def test_vonage_legacy_gateway_sets_both_urls(region: vonage.Region) -> None:
    provider = vonage.provider(
        region=region, client_id="id", client_secret=SECRET, gateway="legacy"
    )
    assert URL(f"https://{region}.newvoicemedia.com/auth/connect/token") == provider.token_url
    assert (URL(f"https://{region}.api.newvoicemedia.com"),) == provider.api


def test_vonage_region_helpers() -> None:
    assert "https://emea.cc.vonage.com/Auth/connect/token" == vonage.token_url_for("emea")
    assert "https://apac.cc.vonage.com" == vonage.api_base_for("apac")
    assert "https://emea.newvoicemedia.com/auth/connect/token" == vonage.token_url_for(
        "emea", "legacy"
    )
    assert "https://apac.api.newvoicemedia.com" == vonage.api_base_for("apac", "legacy")
    assert ("nam", "emea", "apac") == vonage.REGIONS
    assert ("cc", "legacy") == vonage.GATEWAYS


CC_EMEA = "https://emea.cc.vonage.com (the emea cc gateway)"
LEGACY_EMEA_API = "https://emea.api.newvoicemedia.com (the emea legacy gateway)"
GATEWAYS_DIFFER = (
    " are on different gateways: a token works only on the gateway that issued it; put "
    "token_url= and api= on one gateway, or choose region= and gateway="
)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param(
            {"gateway": "legacy", "token_url": "https://emea.cc.vonage.com/Auth/connect/token"},
            f"token_url {CC_EMEA} and api {LEGACY_EMEA_API}{GATEWAYS_DIFFER}",
            id="legacy-token_url-moved-to-cc",
        ),
        pytest.param(
            {"token_url": "https://emea.newvoicemedia.com/auth/connect/token"},
            "token_url https://emea.newvoicemedia.com (the emea legacy gateway) and api "
            f"{CC_EMEA}{GATEWAYS_DIFFER}",
            id="cc-token_url-moved-to-legacy",
        ),
        pytest.param(
            {"token_url": "https://sandbox.example/token?key=topsecret-key"},
            f"token_url https://sandbox.example (not a VCC gateway) and api {CC_EMEA}",
            id="token_url-to-a-sandbox",
        ),
        pytest.param(
            {"api": "https://emea.api.newvoicemedia.com"},
            f"token_url {CC_EMEA} and api {LEGACY_EMEA_API}{GATEWAYS_DIFFER}",
            id="api-moved-to-legacy",
        ),
        pytest.param(
            {"api": ["https://emea.cc.vonage.com/v2", "https://other.example"]},
            f"token_url {CC_EMEA} and api https://other.example (not a VCC gateway)",
            id="one-of-several-api-moved",
        ),
        # Red team pass 11: both given, on different gateways, were accepted.
        pytest.param(
            {
                "token_url": "https://emea.cc.vonage.com/Auth/connect/token",
                "api": "https://emea.api.newvoicemedia.com",
            },
            f"token_url {CC_EMEA} and api {LEGACY_EMEA_API}{GATEWAYS_DIFFER}",
            id="both-given-cc-default-spelled-out-api-legacy",
        ),
        pytest.param(
            {
                "token_url": "https://emea.newvoicemedia.com/auth/connect/token",
                "api": "https://emea.cc.vonage.com",
            },
            "token_url https://emea.newvoicemedia.com (the emea legacy gateway) and api "
            f"{CC_EMEA}{GATEWAYS_DIFFER}",
            id="both-given-token-legacy-api-cc",
        ),
        pytest.param(
            {
                "token_url": "https://nam.cc.vonage.com/Auth/connect/token",
                "api": "https://emea.cc.vonage.com",
            },
            "token_url https://nam.cc.vonage.com (the nam cc gateway) and api "
            f"{CC_EMEA}{GATEWAYS_DIFFER}",
            id="both-given-another-region",
        ),
        pytest.param(
            {
                "token_url": "https://emea.cc.vonage.com/Auth/connect/token",
                "api": ["https://emea.cc.vonage.com", "https://nam.cc.vonage.com"],
            },
            f"token_url {CC_EMEA} and api https://nam.cc.vonage.com (the nam cc gateway)",
            id="both-given-one-api-in-another-region",
        ),
        pytest.param(
            {
                "token_url": "https://emea.cc.vonage.com/Auth/connect/token",
                "api": ["https://sandbox.example"],
            },
            f"token_url {CC_EMEA} and api https://sandbox.example (not a VCC gateway)",
            id="both-given-api-off-vcc",
        ),
        pytest.param(
            {"gateway": "new"}, "VCC gateway must be one of ('cc', 'legacy')", id="gateway"
        ),
    ],
)
def test_vonage_refuses_a_token_url_and_api_on_different_gateways(
    overrides: dict[str, Any], problem: str
) -> None:
    # Before: the token came from one host and was stamped only on the other
    # gateway's API, so every Payment API call went out bare and got a 401.
    with pytest.raises(ConfigError) as caught:
        vonage.provider(region="emea", client_id="id", client_secret=SECRET, **overrides)
    assert problem in str(caught.value)
    assert "topsecret-key" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"api": "https://nam.cc.vonage.com/globalpci"}, id="gateway-host-path"),
        pytest.param(
            {"token_url": "https://NAM.CC.VONAGE.COM./Auth/connect/token"},
            id="same-host-spelled-otherwise",
        ),
        pytest.param(
            {
                "token_url": "https://nam.cc.vonage.com/Auth/connect/token",
                "api": "https://nam.cc.vonage.com:443/globalpci",
            },
            id="both-spelled-out",
        ),
        pytest.param(
            {
                "gateway": "legacy",
                "token_url": "https://nam.newvoicemedia.com/auth/connect/token",
                "api": (u for u in ["https://nam.api.newvoicemedia.com/v1"]),  # any iterable
            },
            id="legacy-both-spelled-out",
        ),
        pytest.param(
            {
                "token_url": "https://nam.newvoicemedia.com/auth/connect/token",
                "api": "https://nam.api.newvoicemedia.com",
            },
            id="legacy-both-given-gateway-left-at-cc",
        ),
        pytest.param(
            {
                "token_url": "https://emea.cc.vonage.com/Auth/connect/token",
                "api": "https://emea.cc.vonage.com",
            },
            id="another-region-both-given",
        ),
        pytest.param(
            {
                "token_url": "https://sandbox.example/Auth/connect/token",
                "api": ["https://sandbox.example", "https://sandbox-api.example/v1"],
            },
            id="sandbox-off-vcc",
        ),
        pytest.param(
            {"token_url": "http://127.0.0.1:8080/token", "api": "http://127.0.0.1:8081"},
            id="loopback-fakes",
        ),
    ],
)
def test_vonage_urls_on_one_gateway_are_accepted(overrides: dict[str, Any]) -> None:
    profile = vonage.provider(region="nam", client_id="id", client_secret=SECRET, **overrides)
    assert profile.api


def test_vonage_overrides() -> None:
    provider = vonage.provider(
        region="emea",
        client_id="id",
        client_secret=SECRET,
        token_url="https://emea.cc.vonage.com/Auth/connect/token",
        api=["https://emea.cc.vonage.com/globalpci", "https://emea.cc.vonage.com/v2"],
        scope="users:read",
        client_auth="basic",
        name="vcc-users",
    )
    assert URL("https://emea.cc.vonage.com/Auth/connect/token") == provider.token_url
    assert (
        URL("https://emea.cc.vonage.com/globalpci"),
        URL("https://emea.cc.vonage.com/v2"),
    ) == provider.api
    assert "users:read" == provider.scope
    assert "basic" == provider.client_auth
    assert "vcc-users" == provider.name


def test_vonage_password_grant_and_refresh_token() -> None:
    provider = vonage.provider(
        region="nam",
        client_id="id",
        client_secret=SECRET,
        username="agent",
        password=PASSWORD,
        refresh_token="rt-from-elsewhere",
    )
    assert "password" == provider.grant_type
    assert provider.refresh_token is not None
    assert "rt-from-elsewhere" == provider.refresh_token.reveal()


# ---------------------------------------------------------------------------
# Pay-me environments


@pytest.mark.parametrize(
    ("environment", "token_url", "audience", "version", "nonce"),
    [
        # Only Pay-me's v1 pages list development, with the v1 version.
        pytest.param(
            "development",
            "https://auth.wip.alignet.io/token",
            "https://api.dev.alignet.io",
            "1618440906",
            "https://auth.wip.alignet.io/nonce",
            id="development",
        ),
        # docs.pay-me.com/api-de-pagos/autenticacion and the Nonce pages.
        pytest.param(
            "pre-production",
            "https://auth.preprod.alignet.io/token",
            "https://api.preprod.alignet.io/",
            "1709847567",
            "https://auth.preprod.alignet.io/nonce",
            id="pre-production",
        ),
        pytest.param(
            "production",
            "https://auth.alignet.io/token",
            "https://api.alignet.io/",
            "1709847567",
            "https://auth.alignet.io/nonce",
            id="production",
        ),
    ],
)
def test_payme_environments(
    environment: payme.Environment, token_url: str, audience: str, version: str, nonce: str
) -> None:
    provider = payme.provider(environment=environment, client_id="id", client_secret=SECRET)
    assert f"payme-{environment}" == provider.name
    assert URL(token_url) == provider.token_url
    assert (URL(audience), URL(nonce)) == provider.api
    # The audience goes out byte for byte: the trailing slash is part of it.
    assert ("audience", audience) in provider.extra_fields
    assert ("action", "authorize") in provider.extra_fields
    assert (("ALG-API-VERSION", version),) == provider.extra_headers
    assert "json" == provider.encoding
    assert payme.DEFAULT_SCOPE == provider.scope
    assert provider.envelope is payme.envelope_failure
    assert stamped(provider, nonce)
    assert not stamped(provider, token_url)


def test_payme_current_api_version_is_the_default_and_a_parameter() -> None:
    assert "1709847567" == payme.API_VERSION
    assert "1618440906" == payme.API_VERSION_V1
    provider = payme.provider(
        environment="production",
        client_id="id",
        client_secret=SECRET,
        api_version=payme.API_VERSION_V1,
        audience="https://api.alignet.io",
    )
    assert (("ALG-API-VERSION", "1618440906"),) == provider.extra_headers
    assert ("audience", "https://api.alignet.io") in provider.extra_fields


def test_payme_preproduction_with_audience() -> None:
    provider = payme.provider(
        environment="pre-production",
        client_id="id",
        client_secret=SECRET,
        audience="https://api.pp.example",
    )
    assert URL("https://auth.preprod.alignet.io/token") == provider.token_url
    assert URL("https://api.pp.example") == provider.api[0]
    assert ("audience", "https://api.pp.example") in provider.extra_fields


def test_payme_overrides() -> None:
    provider = payme.provider(
        environment="development",
        client_id="id",
        client_secret=SECRET,
        audience="https://aud.example",
        token_url="https://127.0.0.1:9443/token",
        api="https://api.example/charges",
        username="merchant",
        password=PASSWORD,
    )
    assert URL("https://127.0.0.1:9443/token") == provider.token_url
    assert (URL("https://api.example/charges"),) == provider.api
    assert ("audience", "https://aud.example") in provider.extra_fields
    assert "password" == provider.grant_type


# ---------------------------------------------------------------------------
# API scope


def oro_provider(application: oro.Application) -> Provider:
    return oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application=application,
    )


@pytest.mark.parametrize(
    ("url", "backoffice", "storefront"),
    [
        pytest.param("https://shop.example/admin/api/orders", True, False, id="admin-api"),
        pytest.param("https://shop.example/admin/api", True, False, id="admin-api-exact"),
        pytest.param("https://shop.example/api/orders", False, True, id="api"),
        pytest.param("https://shop.example/api", False, True, id="api-exact"),
        pytest.param("https://shop.example/api/", False, True, id="api-slash"),
        pytest.param("https://shop.example/apix", False, False, id="apix-not-under-api"),
        pytest.param("https://shop.example/apix/orders", False, False, id="apix-sub"),
        pytest.param("https://shop.example/admin/apix", False, False, id="admin-apix"),
        pytest.param("https://shop.example/admin", False, False, id="admin-only"),
        pytest.param("https://shop.example/oauth2-token", False, False, id="token-endpoint"),
        pytest.param("https://shop.example/", False, False, id="root"),
        pytest.param("http://shop.example/api/orders", False, False, id="other-scheme"),
        pytest.param("https://shop.example:8443/api/orders", False, False, id="other-port"),
        pytest.param("https://shop.example:443/api/orders", False, True, id="explicit-443"),
        pytest.param("https://evil.example/api/orders", False, False, id="other-host"),
        pytest.param("https://shop.example.evil.example/api", False, False, id="suffix-host"),
        pytest.param("https://SHOP.EXAMPLE/api/orders", False, True, id="host-case"),
        pytest.param("https://shop.example/api/../admin/api/x", True, False, id="dot-segments"),
        pytest.param("https://shop.example/admin/api/../../api/x", False, True, id="dots-up"),
    ],
)
def test_oro_backoffice_vs_storefront_scope(url: str, backoffice: bool, storefront: bool) -> None:
    back, front = TokenHolder(oro_provider("backoffice")), TokenHolder(oro_provider("storefront"))
    assert backoffice == stamped(back.provider, url)
    assert storefront == stamped(front.provider, url)
    # One middleware for both, as a worker's session has: each URL to its own.
    owner = BearerAuth(back, front).holder_for(URL(url))
    assert owner is (back if backoffice else front if storefront else None)


def test_oro_profiles() -> None:
    backoffice = oro_provider("backoffice")
    storefront = oro_provider("storefront")
    assert "oro-backoffice" == backoffice.name
    assert "oro-storefront" == storefront.name
    assert (URL("https://shop.example/admin/api"),) == backoffice.api
    assert (URL("https://shop.example/api"),) == storefront.api
    assert URL("https://shop.example/oauth2-token") == backoffice.token_url
    assert backoffice.token_url == storefront.token_url
    assert "json" == backoffice.encoding


def test_oro_storefront_customer_user_password_grant() -> None:
    # doc.oroinc.com "Manage Customer User OAuth Applications": client
    # credentials or password; "Password Grant Type: Generate Token": a JSON
    # body with grant_type password, client_id, client_secret, username, password.
    provider = oro.provider(
        app_url="https://shop.example",
        client_id="id",
        client_secret=SECRET,
        application="storefront",
        username="buyer@example.com",
        password=PASSWORD,
    )
    assert "password" == provider.grant_type
    assert "buyer@example.com" == provider.username
    assert provider.password is not None
    assert PASSWORD == provider.password.reveal()
    assert (URL("https://shop.example/api"),) == provider.api
    assert ("json", "body") == (provider.encoding, provider.client_auth)
    assert "client_credentials" == oro_provider("storefront").grant_type


def test_oro_custom_paths() -> None:
    provider = oro.provider(
        app_url="https://crm.example/",
        client_id="id",
        client_secret=SECRET,
        backoffice_path="/backend/api/",
    )
    assert (URL("https://crm.example/backend/api"),) == provider.api
    assert stamped(provider, "https://crm.example/backend/api/users")
    assert not stamped(provider, "https://crm.example/admin/api/users")


@pytest.mark.parametrize(
    ("api", "url", "expected"),
    [
        pytest.param(cm.API_BASE, cm.API_BASE + "/paymentmethods", True, id="cm-below"),
        pytest.param(cm.API_BASE, cm.API_BASE, True, id="cm-exact"),
        pytest.param(cm.API_BASE, "https://api.pay.cm.com/api/v10/x", False, id="cm-v10"),
        pytest.param(cm.API_BASE, "https://api.pay.cm.com/api", False, id="cm-parent"),
        pytest.param("https://h.example/api/", "https://h.example/api", True, id="slash-prefix"),
        pytest.param("https://h.example/api/", "https://h.example/apix", False, id="slash-apix"),
        pytest.param("https://h.example", "https://h.example/anything", True, id="origin-only"),
        pytest.param("https://h.example/", "https://h.example/", True, id="origin-root"),
        pytest.param("https://h.example", "http://h.example/anything", False, id="origin-http"),
        pytest.param("https://h.example", "https://h.example:444/", False, id="origin-port"),
        pytest.param(
            "http://127.0.0.1:8080/api", "http://127.0.0.1:8081/api", False, id="loopback-port"
        ),
        pytest.param(
            "http://127.0.0.1:8080/api", "http://localhost:8080/api", False, id="loopback-name"
        ),
    ],
)
def test_in_scope(api: str, url: str, expected: bool) -> None:
    assert expected == stamped(make(api=api), url)


def test_in_scope_with_several_api_urls() -> None:
    provider = make(api=["https://a.example/v1", "https://b.example/v2"])
    assert stamped(provider, "https://a.example/v1/x")
    assert stamped(provider, "https://b.example/v2/y")
    assert not stamped(provider, "https://a.example/v2/y")
    assert not stamped(provider, "https://b.example/v1/x")


# ---------------------------------------------------------------------------
# repr never shows secrets


def all_profiles() -> list[Provider]:
    return [
        make(grant_type="password", username="alice", password=PASSWORD, refresh_token="rt-0123"),
        cm.provider(client_id="id", client_secret=SECRET),
        vonage.provider(
            region="emea",
            client_id="id",
            client_secret=SECRET,
            username="agent",
            password=PASSWORD,
            refresh_token="rt-0123",
            client_auth="basic",
        ),
        payme.provider(
            environment="production",
            client_id="id",
            client_secret=SECRET,
            username="merchant",
            password=PASSWORD,
        ),
        oro.provider(
            app_url="https://shop.example",
            client_id="id",
            client_secret=SECRET,
            application="storefront",
            username="buyer",
            password=PASSWORD,
        ),
        generic.provider(
            name="g",
            token_url="https://auth.example/token",
            api="https://api.example",
            client_id="id",
            client_secret=SECRET,
            username="u",
            password=PASSWORD,
            refresh_token="rt-0123",
        ),
    ]


@pytest.mark.parametrize(
    "provider", all_profiles(), ids=["provider", "cm", "vonage", "payme", "oro", "generic"]
)
def test_repr_never_contains_secrets(provider: Provider) -> None:
    for shown in (repr(provider), str(provider)):
        assert SECRET not in shown
        assert PASSWORD not in shown
        assert "rt-0123" not in shown
        assert "Secret('***')" in shown
    assert SECRET == provider.client_secret.reveal()


def test_secrets_are_held_as_secret_objects() -> None:
    provider = make(grant_type="password", username="alice", password=PASSWORD)
    assert provider.password is not None
    assert PASSWORD == provider.password.reveal()
    assert SECRET == provider.client_secret.reveal()
    assert "Secret('***')" == repr(provider.client_secret)
