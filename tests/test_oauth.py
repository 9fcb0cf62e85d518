"""Table-driven tests of the sans-I/O OAuth core (``aiopay_auth._oauth``)."""

from __future__ import annotations

import base64
import email.utils
import json
import math
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote_plus

import attrs
import pytest
from multidict import CIMultiDict
from yarl import URL

from aiopay_auth import Provider
from aiopay_auth._health import failure_kind
from aiopay_auth._oauth import (
    MAX_LIFETIME,
    MAX_RESPONSE_BYTES,
    MIN_LIFETIME,
    TokenRequest,
    basic_credentials,
    build_token_request,
    lifetime_from,
    parse_retry_after,
    parse_token_response,
)
from aiopay_auth._secret import Secret
from aiopay_auth._token import Token
from aiopay_auth.exceptions import TokenResponseError, scrub
from aiopay_auth.providers import cm, generic, oro, payme, vonage


TRICKY_SECRET = "s3cret+/:%&="
DEFAULT_LIFETIME = 123.0
ISSUED_AT = 1000.0
WALL_NOW = 1_700_000_000.0


# ---------------------------------------------------------------------------
# helpers


def make_provider(**overrides: Any) -> Provider:
    """A generic provider; *overrides* replace any field."""
    fields: dict[str, Any] = {
        "name": "test",
        "token_url": "https://auth.example/token",
        "api": "https://api.example/v1",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "default_lifetime": DEFAULT_LIFETIME,
    }
    fields.update(overrides)
    return Provider(**fields)


def headers_of(request: TokenRequest) -> dict[str, str]:
    names = [name.lower() for name, _ in request.headers]
    assert len(set(names)) == len(names), f"duplicate headers: {names}"
    return {name: value for name, value in request.headers}


def body_of(request: TokenRequest) -> dict[str, Any]:
    """Decode the body according to its declared Content-Type."""
    content_type = headers_of(request)["Content-Type"]
    if content_type == "application/json":
        decoded = json.loads(request.body)
        assert isinstance(decoded, dict)
        return decoded
    assert content_type == "application/x-www-form-urlencoded"
    pairs = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    keys = [key for key, _ in pairs]
    assert len(set(keys)) == len(keys), f"duplicate form fields: {keys}"
    return dict(pairs)


def decode_basic(value: str) -> tuple[str, str]:
    """Undo RFC 6749 §2.3.1: base64, split at the first ':', form-decode each part."""
    scheme, _, encoded = value.partition(" ")
    assert "Basic" == scheme
    raw = base64.b64decode(encoded, validate=True).decode("utf-8")
    client_id, sep, client_secret = raw.partition(":")
    assert ":" == sep
    return unquote_plus(client_id), unquote_plus(client_secret)


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def parse(
    provider: Provider | None = None,
    *,
    body: object | bytes,
    status: int = 200,
    headers: dict[str, str] | None = None,
    issued_at: float = ISSUED_AT,
    wall_now: float = WALL_NOW,
) -> Token:
    raw = body if isinstance(body, bytes) else encode(body)
    return parse_token_response(
        provider or make_provider(),
        status=status,
        headers=headers or {},
        body=raw,
        issued_at=issued_at,
        wall_now=wall_now,
    )


def parse_error(
    provider: Provider | None = None,
    *,
    body: object | bytes,
    status: int = 200,
    headers: dict[str, str] | None = None,
    wall_now: float = WALL_NOW,
) -> TokenResponseError:
    with pytest.raises(TokenResponseError) as caught:
        parse(provider, body=body, status=status, headers=headers, wall_now=wall_now)
    return caught.value


# ---------------------------------------------------------------------------
# basic_credentials


@pytest.mark.parametrize(
    ("client_id", "client_secret", "expected_raw"),
    [
        pytest.param("id", "secret", "id:secret", id="plain"),
        pytest.param("a b", "c d", "a+b:c+d", id="space-becomes-plus"),
        pytest.param("id:x", "s", "id%3Ax:s", id="colon-in-id-encoded"),
        pytest.param("id", TRICKY_SECRET, "id:s3cret%2B%2F%3A%25%26%3D", id="reserved-in-secret"),
        pytest.param("ïd", "sécret", "%C3%AFd:s%C3%A9cret", id="non-ascii-utf8"),
    ],
)
def test_basic_credentials_form_encodes_before_base64(
    client_id: str, client_secret: str, expected_raw: str
) -> None:
    expected = "Basic " + base64.b64encode(expected_raw.encode("ascii")).decode("ascii")
    assert expected == basic_credentials(client_id, client_secret)


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [
        pytest.param("client-1", TRICKY_SECRET, id="tricky-secret"),
        pytest.param("id:with:colons", "p:a:s:s", id="colons-both"),
        pytest.param("id+plus", "%41%", id="percent-and-plus"),
        pytest.param("ünï cödé", "🔑 key", id="unicode-and-spaces"),
    ],
)
def test_basic_credentials_round_trip(client_id: str, client_secret: str) -> None:
    assert (client_id, client_secret) == decode_basic(basic_credentials(client_id, client_secret))


# ---------------------------------------------------------------------------
# build_token_request: every grant x client auth x encoding

AUTH_ENCODINGS = [
    pytest.param("body", "form", id="body-form"),
    pytest.param("body", "json", id="body-json"),
    pytest.param("basic", "form", id="basic-form"),
]


class GrantCase(NamedTuple):
    grant: str
    overrides: dict[str, str]
    refresh: str | None
    fields: dict[str, str]


GRANTS = [
    pytest.param(
        GrantCase("client_credentials", {}, None, {"grant_type": "client_credentials"}),
        id="client_credentials",
    ),
    pytest.param(
        GrantCase(
            "password",
            {"grant_type": "password", "username": "alice", "password": "pw: &=+"},
            None,
            {"grant_type": "password", "username": "alice", "password": "pw: &=+"},
        ),
        id="password",
    ),
    pytest.param(
        GrantCase(
            "refresh_token",
            {},
            "rt-1",
            {"grant_type": "refresh_token", "refresh_token": "rt-1"},
        ),
        id="refresh_token",
    ),
    pytest.param(
        GrantCase(
            "refresh_token",
            {"grant_type": "password", "username": "alice", "password": "pw"},
            "rt/2+=",
            {"grant_type": "refresh_token", "refresh_token": "rt/2+=", "username": "alice"},
        ),
        id="refresh_token-after-password",
    ),
]


@pytest.mark.parametrize(("client_auth", "encoding"), AUTH_ENCODINGS)
@pytest.mark.parametrize("case", GRANTS)
def test_build_request_grant_auth_encoding(
    client_auth: str, encoding: str, case: GrantCase
) -> None:
    provider = make_provider(
        client_auth=client_auth,
        encoding=encoding,
        client_secret=TRICKY_SECRET,
        scope="read write",
        **case.overrides,
    )
    refresh = None if case.refresh is None else Secret(case.refresh)
    request = build_token_request(provider, refresh_token=refresh)

    expected_fields = {**case.fields, "scope": "read write"}
    if client_auth == "body":
        expected_fields |= {"client_id": "client-1", "client_secret": TRICKY_SECRET}
    headers = headers_of(request)

    assert URL("https://auth.example/token") == request.url
    assert case.grant == request.grant_type
    assert expected_fields == body_of(request)
    assert "application/json" == headers["Accept"]
    expected_type = (
        "application/json" if encoding == "json" else "application/x-www-form-urlencoded"
    )
    assert expected_type == headers["Content-Type"]
    if client_auth == "basic":
        assert ("client-1", TRICKY_SECRET) == decode_basic(headers["Authorization"])
    else:
        assert "Authorization" not in headers


def test_refresh_request_never_sends_the_password() -> None:
    provider = make_provider(grant_type="password", username="alice", password="hunter2")
    request = build_token_request(provider, refresh_token=Secret("rt"))
    assert "password" not in body_of(request)
    assert b"hunter2" not in request.body


def test_request_without_scope_sends_no_scope_field() -> None:
    assert "scope" not in body_of(build_token_request(make_provider()))


def test_extra_fields_never_override_grant_fields() -> None:
    provider = make_provider(
        scope="real-scope",
        extra_fields={
            "grant_type": "evil",
            "client_id": "evil",
            "client_secret": "evil",
            "scope": "evil",
            "audience": "https://aud.example",
        },
    )
    assert {
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "scope": "real-scope",
        "audience": "https://aud.example",
    } == body_of(build_token_request(provider))


def test_extra_fields_do_not_override_refresh_fields() -> None:
    provider = make_provider(extra_fields={"grant_type": "password", "refresh_token": "old"})
    request = build_token_request(provider, refresh_token=Secret("new"))
    body = body_of(request)
    assert "refresh_token" == body["grant_type"]
    assert "new" == body["refresh_token"]
    assert "refresh_token" == request.grant_type


def test_extra_headers_are_sent() -> None:
    provider = make_provider(extra_headers={"X-Api-Version": "7", "X-Tenant": "t1"})
    headers = headers_of(build_token_request(provider))
    assert "7" == headers["X-Api-Version"]
    assert "t1" == headers["X-Tenant"]
    assert "application/json" == headers["Accept"]


def test_token_request_repr_hides_secrets() -> None:
    provider = make_provider(client_auth="basic", client_secret="very-secret-value")
    request = build_token_request(provider, refresh_token=Secret("refresh-secret-value"))
    shown = repr(request)
    assert "very-secret-value" not in shown
    assert "refresh-secret-value" not in shown
    assert basic_credentials("client-1", "very-secret-value") not in shown


HS_KEY = "client-secret-jwt-key-0123456789abcdef"


@pytest.mark.parametrize(
    ("overrides", "refresh", "secrets"),
    [
        pytest.param(
            {"client_secret": "body-secret-value"}, None, ["body-secret-value"], id="body"
        ),
        pytest.param(
            {"client_auth": "basic", "client_secret": "basic-secret-value"},
            None,
            [basic_credentials("client-1", "basic-secret-value").removeprefix("Basic ")],
            id="basic",
        ),
        pytest.param(
            {"grant_type": "password", "username": "u", "password": "password-value"},
            Secret("refresh-secret-value"),
            ["secret-1", "refresh-secret-value"],
            id="refresh",
        ),
        pytest.param(
            {"client_auth": "client_secret_jwt", "client_secret": HS_KEY},
            None,
            ["eyJ"],  # the signed assertion (a JWS starts with its base64url header)
            id="client_secret_jwt",
        ),
        pytest.param(
            {"extra_headers": {"X-Key": Secret("header-secret-value")}},
            None,
            ["header-secret-value"],
            id="secret-extra-header",
        ),
    ],
)
def test_token_request_secrets_stay_sealed_under_asdict(
    overrides: dict[str, Any], refresh: Secret | None, secrets: list[str]
) -> None:
    # Red team pass 11: repr() hid the headers and body, attrs.asdict(),
    # astuple() and the slots did not (client secret, Basic header, assertion).
    request = build_token_request(
        make_provider(**overrides), refresh_token=refresh, now=WALL_NOW, jti="jti-1"
    )
    sent = request.body.decode() + repr(request.headers)
    assert all(secret in sent for secret in secrets)  # what is sent is unchanged
    shown = [
        repr(request),
        repr(attrs.asdict(request)),
        repr(attrs.astuple(request)),
        repr([getattr(request, a.name) for a in attrs.fields(TokenRequest)]),
    ]
    for text in shown:
        assert not [secret for secret in secrets if secret in text], text
    assert {"url", "_headers", "_body", "grant_type"} == set(attrs.asdict(request))


def test_token_request_takes_and_gives_plain_values() -> None:
    request = TokenRequest(
        url=URL("https://auth.example/token"),
        headers=(("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),),
        body=b"grant_type=client_credentials&\xff",
        grant_type="client_credentials",
    )
    assert (("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),) == request.headers
    assert b"grant_type=client_credentials&\xff" == request.body  # any bytes survive
    assert request == attrs.evolve(request)
    moved = attrs.evolve(request, body=b"grant_type=password")
    assert b"grant_type=password" == moved.body
    assert moved != request
    assert request.headers == moved.headers


# ---------------------------------------------------------------------------
# each provider profile's actual request


def test_cm_request() -> None:
    request = build_token_request(cm.provider(client_id="cm-id", client_secret=TRICKY_SECRET))
    assert URL(cm.TOKEN_URL) == request.url
    assert {
        "client_id": "cm-id",
        "client_secret": TRICKY_SECRET,
        "grant_type": "client_credentials",
    } == body_of(request)
    assert {
        "accept": "application/json",
        "content-type": "application/x-www-form-urlencoded",
    } == {name.lower(): value for name, value in request.headers}


@pytest.mark.parametrize("region", ["nam", "emea", "apac"])
def test_vonage_request_body_auth(region: vonage.Region) -> None:
    provider = vonage.provider(region=region, client_id="vcc-id", client_secret=TRICKY_SECRET)
    request = build_token_request(provider)
    assert URL(f"https://{region}.cc.vonage.com/Auth/connect/token") == request.url
    assert {
        "grant_type": "client_credentials",
        "scope": "globalpci",
        "client_id": "vcc-id",
        "client_secret": TRICKY_SECRET,
    } == body_of(request)
    assert "Authorization" not in headers_of(request)


def test_vonage_request_basic_auth() -> None:
    provider = vonage.provider(
        region="nam", client_id="vcc-id", client_secret=TRICKY_SECRET, client_auth="basic"
    )
    request = build_token_request(provider)
    assert {"grant_type": "client_credentials", "scope": "globalpci"} == body_of(request)
    assert ("vcc-id", TRICKY_SECRET) == decode_basic(headers_of(request)["Authorization"])
    assert TRICKY_SECRET.encode() not in request.body


def payme_provider() -> Provider:
    return payme.provider(
        environment="development",
        client_id="pm-id",
        client_secret="pm-secret",
        username="merchant@example.com",
        password="pm-password",
    )


def test_payme_password_request() -> None:
    request = build_token_request(payme_provider())
    headers = headers_of(request)
    assert URL("https://auth.wip.alignet.io/token") == request.url
    assert {
        "action": "authorize",
        "grant_type": "password",
        "client_id": "pm-id",
        "client_secret": "pm-secret",
        "audience": "https://api.dev.alignet.io",
        "username": "merchant@example.com",
        "password": "pm-password",
        "scope": "create:token post:charges offline_access",
    } == body_of(request)
    assert "application/json" == headers["Content-Type"]
    assert "application/json" == headers["Accept"]
    assert "1618440906" == headers["ALG-API-VERSION"]


def test_payme_refresh_request() -> None:
    request = build_token_request(payme_provider(), refresh_token=Secret("pm-refresh"))
    headers = headers_of(request)
    assert URL("https://auth.wip.alignet.io/token") == request.url
    assert "refresh_token" == request.grant_type
    assert {
        "action": "authorize",
        "grant_type": "refresh_token",
        "refresh_token": "pm-refresh",
        "client_id": "pm-id",
        "client_secret": "pm-secret",
        "audience": "https://api.dev.alignet.io",
        "username": "merchant@example.com",
        "scope": "create:token post:charges offline_access",
    } == body_of(request)
    assert "1618440906" == headers["ALG-API-VERSION"]
    assert "application/json" == headers["Content-Type"]


def test_payme_client_credentials_request() -> None:
    provider = payme.provider(environment="production", client_id="pm", client_secret="s")
    body = body_of(build_token_request(provider))
    assert "client_credentials" == body["grant_type"]
    assert "https://api.alignet.io/" == body["audience"]
    assert "username" not in body
    assert "password" not in body


@pytest.mark.parametrize(
    ("app_url", "expected_url"),
    [
        pytest.param("https://shop.example", "https://shop.example/oauth2-token", id="bare"),
        pytest.param("https://shop.example/", "https://shop.example/oauth2-token", id="slash"),
        pytest.param(
            "https://example.com/shop/", "https://example.com/shop/oauth2-token", id="sub-path"
        ),
    ],
)
@pytest.mark.parametrize("application", ["backoffice", "storefront"])
def test_oro_request(app_url: str, expected_url: str, application: oro.Application) -> None:
    provider = oro.provider(
        app_url=app_url, client_id="oro-id", client_secret="oro-secret", application=application
    )
    request = build_token_request(provider)
    assert URL(expected_url) == request.url
    assert "application/json" == headers_of(request)["Content-Type"]
    assert {
        "grant_type": "client_credentials",
        "client_id": "oro-id",
        "client_secret": "oro-secret",
    } == body_of(request)


# ---------------------------------------------------------------------------
# lifetime_from and parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Whole seconds: one is given up, as the issue time may have been floored.
        pytest.param(3600, 3599.0, id="int"),
        pytest.param(2, 1.0, id="int-2"),
        pytest.param(1, 1.0, id="int-1-kept"),
        pytest.param(3600.5, 3600.5, id="float"),
        pytest.param(3600.0, 3600.0, id="float-is-exact"),
        pytest.param(1.5, 1.5, id="float-1.5"),
        pytest.param("3600", 3599.0, id="digit-string"),
        pytest.param(" 42 ", 41.0, id="padded-string"),
        pytest.param("+7", 6.0, id="plus-sign"),
        pytest.param("1", 1.0, id="digit-string-1"),
        pytest.param(None, DEFAULT_LIFETIME, id="missing"),
        pytest.param(MIN_LIFETIME, MIN_LIFETIME, id="shortest-usable"),
        pytest.param(86400, MAX_LIFETIME - 1, id="one-day"),
        pytest.param(86401, MAX_LIFETIME, id="just-over"),
        pytest.param(10**12, MAX_LIFETIME, id="huge-int"),
        pytest.param(10**400, MAX_LIFETIME, id="int-too-big-for-float"),
        pytest.param(1e300, MAX_LIFETIME, id="huge-float"),
    ],
)
def test_lifetime_from(value: object, expected: float) -> None:
    assert expected == lifetime_from(value, DEFAULT_LIFETIME)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param("0", id="zero-string"),
        pytest.param("-5", id="negative-string"),
        pytest.param("abc", id="letters"),
        pytest.param("", id="empty-string"),
        pytest.param("3600.5", id="decimal-string"),
        pytest.param("1e3", id="exponent-string"),
        pytest.param("9" * 16, id="too-many-digits"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param([], id="list"),
        pytest.param({}, id="dict"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="-inf"),
        pytest.param(1e-6, id="1e-6-too-short"),
        pytest.param(0.001, id="1ms-too-short"),
        pytest.param(0.05, id="50ms-too-short"),
        pytest.param(math.nextafter(MIN_LIFETIME, 0.0), id="just-under-the-floor"),
    ],
)
def test_lifetime_from_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        lifetime_from(value, DEFAULT_LIFETIME)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(0, "expires_in must be a positive number of seconds", id="zero"),
        pytest.param(0.0, "expires_in must be a positive number of seconds", id="zero-float"),
        pytest.param(-1, "expires_in must be a positive number of seconds", id="negative"),
        pytest.param(math.nan, "expires_in must be a positive number of seconds", id="nan"),
        pytest.param(True, "expires_in is a boolean", id="boolean"),
        pytest.param("1e3", "expires_in is not a number of seconds", id="exponent-string"),
        pytest.param(0.1, "expires_in of 0.1 s is too short to use (under 0.2 s)", id="short"),
    ],
)
def test_lifetime_from_says_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^expires_in") as error:
        lifetime_from(value, DEFAULT_LIFETIME)
    assert message == str(error.value)


HTTP_DATE = email.utils.formatdate(WALL_NOW + 30, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(HTTP_DATE, 30.0, id="http-date"),
        pytest.param(email.utils.formatdate(WALL_NOW - 60, usegmt=True), 0.0, id="past-date"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="decimal"),
        pytest.param("²", None, id="superscript-digit"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 -0000", None, id="date-without-zone"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert expected == parse_retry_after(value, wall_now=WALL_NOW)


# ---------------------------------------------------------------------------
# parse_token_response: RFC 6749 §5.1 success


def test_parse_success_rfc6749_example() -> None:
    token = parse(
        body={
            "access_token": "2YotnFZFEjr1zCsicMWpAA",
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "tGzv3JOkF0XG5Qx2TlKWIA",
            "scope": "read write",
        }
    )
    assert "2YotnFZFEjr1zCsicMWpAA" == token.access_token
    assert "Bearer 2YotnFZFEjr1zCsicMWpAA" == token.header
    assert 3599.0 == token.lifetime  # whole seconds: one given up
    assert Secret("tGzv3JOkF0XG5Qx2TlKWIA") == token.refresh_token
    assert isinstance(token.refresh_token, Secret)
    assert "read write" == token.scope


@pytest.mark.parametrize(
    ("token_type", "expected_type"),
    [
        pytest.param("Bearer", "Bearer", id="Bearer"),
        pytest.param("bearer", "bearer", id="bearer"),
        pytest.param("BEARER", "BEARER", id="BEARER"),
        pytest.param(None, "Bearer", id="missing"),
    ],
)
def test_token_type_accepted(token_type: str | None, expected_type: str) -> None:
    body: dict[str, object] = {"access_token": "tok", "expires_in": 60}
    if token_type is not None:
        body["token_type"] = token_type
    token = parse(body=body)
    assert expected_type == token.token_type
    assert "Bearer tok" == token.header


@pytest.mark.parametrize(
    "token_type",
    [
        pytest.param("mac", id="mac"),
        pytest.param("DPoP", id="dpop"),
        pytest.param("Bearer ", id="trailing-space"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(1, id="number"),
    ],
)
def test_token_type_rejected_not_retryable(token_type: object) -> None:
    err = parse_error(body={"access_token": "tok", "token_type": token_type})
    assert not err.retryable
    assert 200 == err.status
    assert "token_type" in str(err)


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        pytest.param(3600, 3599.0, id="int"),
        pytest.param(7200.0, 7200.0, id="float"),
        pytest.param(0.5, 0.5, id="sub-second"),
        pytest.param("3600", 3599.0, id="string"),
        pytest.param(" 42 ", 41.0, id="padded-string"),
        pytest.param(None, DEFAULT_LIFETIME, id="null"),
        pytest.param(10**12, MAX_LIFETIME, id="huge-capped"),
        pytest.param(10**400, MAX_LIFETIME, id="beyond-float-capped"),
    ],
)
def test_expires_in_accepted(expires_in: object, expected: float) -> None:
    token = parse(body={"access_token": "tok", "token_type": "Bearer", "expires_in": expires_in})
    assert expected == token.lifetime


def test_expires_in_missing_uses_default_lifetime() -> None:
    assert DEFAULT_LIFETIME == parse(body={"access_token": "tok"}).lifetime
    cm_provider = cm.provider(client_id="a", client_secret="b")
    assert cm_provider.default_lifetime == parse(cm_provider, body={"access_token": "t"}).lifetime


@pytest.mark.parametrize(
    "raw_expires_in",
    [
        pytest.param(b"0", id="zero"),
        pytest.param(b"-1", id="negative"),
        pytest.param(b"-3600.5", id="negative-float"),
        pytest.param(b'"abc"', id="letters"),
        pytest.param(b'"-5"', id="negative-string"),
        pytest.param(b"true", id="true"),
        pytest.param(b"[]", id="list"),
        pytest.param(b"{}", id="object"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b"1e400", id="overflowing-float"),
        pytest.param(b"0.001", id="too-short-to-use"),
    ],
)
def test_expires_in_rejected_retryable(raw_expires_in: bytes) -> None:
    body = b'{"access_token":"tok","token_type":"Bearer","expires_in":' + raw_expires_in + b"}"
    err = parse_error(body=body)
    assert err.retryable
    assert 200 == err.status
    assert "expires_in" in str(err)


@pytest.mark.parametrize(
    "access_token",
    [
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
        pytest.param("abc def", id="space"),
        pytest.param("abc\ndef", id="newline"),
        pytest.param("abc\r\nX-Injected: 1", id="header-injection"),
        pytest.param("tök", id="non-ascii"),
        pytest.param(12345, id="number"),
        pytest.param(["tok"], id="list"),
        pytest.param({"value": "tok"}, id="object"),
    ],
)
def test_unusable_access_token_rejected(access_token: object) -> None:
    err = parse_error(body={"access_token": access_token, "token_type": "Bearer"})
    assert err.retryable
    assert "access_token" in str(err)


def test_missing_access_token_rejected() -> None:
    err = parse_error(body={"token_type": "Bearer", "expires_in": 3600})
    assert err.retryable
    assert "access_token" in str(err)


@pytest.mark.parametrize(
    ("refresh_token", "expected"),
    [
        pytest.param("rt", Secret("rt"), id="string"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="null"),
        pytest.param(42, None, id="number"),
    ],
)
def test_refresh_token_captured_as_secret(refresh_token: object, expected: Secret | None) -> None:
    token = parse(body={"access_token": "tok", "refresh_token": refresh_token})
    assert expected == token.refresh_token


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param("a b", "a b", id="string"),
        pytest.param(None, None, id="null"),
        pytest.param(["a", "b"], None, id="list"),
    ],
)
def test_scope_captured(scope: object, expected: str | None) -> None:
    assert expected == parse(body={"access_token": "tok", "scope": scope}).scope


@pytest.mark.parametrize(
    ("issued_at", "expires_in", "expected_expires_at"),
    [
        pytest.param(1000.0, 3600, 4599.0, id="hour"),
        pytest.param(0.0, 1, 1.0, id="zero-clock"),
        pytest.param(0.125, 0.5, 0.625, id="fractions"),
        pytest.param(5e5, 10**9, 5e5 + MAX_LIFETIME, id="capped"),
        pytest.param(-250.0, 300, 49.0, id="negative-monotonic"),
    ],
)
def test_expiry_counts_from_issued_at(
    issued_at: float, expires_in: float, expected_expires_at: float
) -> None:
    token = parse(body={"access_token": "tok", "expires_in": expires_in}, issued_at=issued_at)
    assert issued_at == token.issued_at
    assert expected_expires_at == token.expires_at
    assert token.issued_at + token.lifetime == token.expires_at


def test_any_2xx_status_is_a_success() -> None:
    assert "tok" == parse(body={"access_token": "tok"}, status=201).access_token


# ---------------------------------------------------------------------------
# parse_token_response: RFC 6749 §5.2 errors


@pytest.mark.parametrize(
    ("error", "status", "retryable"),
    [
        pytest.param("invalid_request", 400, False, id="invalid_request"),
        pytest.param("invalid_client", 401, False, id="invalid_client"),
        pytest.param("invalid_grant", 400, False, id="invalid_grant"),
        pytest.param("unauthorized_client", 400, False, id="unauthorized_client"),
        pytest.param("unsupported_grant_type", 400, False, id="unsupported_grant_type"),
        pytest.param("invalid_scope", 400, False, id="invalid_scope"),
        pytest.param("access_denied", 403, False, id="access_denied"),
        pytest.param("server_error", 500, True, id="server_error"),
        pytest.param("temporarily_unavailable", 503, True, id="temporarily_unavailable"),
        pytest.param("slow_down", 400, True, id="slow_down"),
        # The error code decides over the status.
        pytest.param("invalid_client", 503, False, id="invalid_client-with-503"),
        pytest.param("server_error", 400, True, id="server_error-with-400"),
        # An unknown code falls back to the status.
        pytest.param("weird_code", 400, False, id="unknown-with-400"),
        pytest.param("weird_code", 502, True, id="unknown-with-502"),
    ],
)
def test_oauth_error_codes(error: str, status: int, retryable: bool) -> None:
    err = parse_error(
        body={"error": error, "error_description": "Some explanation."}, status=status
    )
    assert retryable == err.retryable
    assert error == err.error
    assert status == err.status
    assert "Some explanation." == err.description
    assert "test" == err.provider
    assert error in str(err)
    assert f"HTTP {status}" in str(err)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        pytest.param(500, True, id="500"),
        pytest.param(502, True, id="502"),
        pytest.param(503, True, id="503"),
        pytest.param(504, True, id="504"),
        pytest.param(429, True, id="429"),
        pytest.param(408, True, id="408"),
        pytest.param(400, False, id="400"),
        pytest.param(401, False, id="401"),
        pytest.param(403, False, id="403"),
        pytest.param(404, False, id="404"),
        pytest.param(302, False, id="302"),
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty-body"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"message": "nope"}', id="no-error-field"),
        pytest.param(b'{"error": 42}', id="non-string-error"),
        pytest.param(b"[1, 2]", id="array"),
    ],
)
def test_status_decides_retryability_without_error_code(
    status: int, retryable: bool, body: bytes
) -> None:
    err = parse_error(body=body, status=status)
    assert retryable == err.retryable
    assert status == err.status
    assert err.error is None


def test_html_error_page_is_truncated() -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body>"
        + "<p>upstream exploded</p>" * 2000
        + "</body></html>"
    ).encode()
    err = parse_error(body=page, status=502)
    assert err.retryable
    assert 502 == err.status
    assert err.error is None
    assert "HTTP 502" in str(err)
    assert "502 Bad Gateway" in str(err)
    assert len(str(err)) < 160
    assert "\n" not in str(err)


def test_non_utf8_error_body_does_not_crash() -> None:
    err = parse_error(body=b"\xff\xfe\x00garbage\x80", status=503)
    assert err.retryable
    assert 503 == err.status


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json at all", id="text"),
        pytest.param(b"<html>ok?</html>", id="html"),
        pytest.param(b"[1, 2, 3]", id="array"),
        pytest.param(b'["access_token"]', id="array-of-string"),
        pytest.param(b'"access_token"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'{"access_token": "abc", "expires_in": 36', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\xfd", id="invalid-utf8"),
        pytest.param(b"[" * 100_00 + b"]" * 100_00, id="deep-nesting"),
    ],
)
def test_unusable_200_body_is_retryable(body: bytes) -> None:
    err = parse_error(body=body, status=200)
    assert err.retryable
    assert 200 == err.status
    assert "JSON" in str(err) or "too large" in str(err)


def test_oversize_body_rejected() -> None:
    body = encode({"access_token": "tok", "pad": "x" * MAX_RESPONSE_BYTES})
    err = parse_error(body=body)
    assert err.retryable
    assert "too large" in str(err)


def test_body_of_exactly_max_size_accepted() -> None:
    head = b'{"access_token":"tok","pad":"'
    tail = b'"}'
    body = head + b"x" * (MAX_RESPONSE_BYTES - len(head) - len(tail)) + tail
    assert MAX_RESPONSE_BYTES == len(body)
    assert "tok" == parse(body=body).access_token


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        pytest.param(503, "120", 120.0, id="503-seconds"),
        pytest.param(429, "7", 7.0, id="429-seconds"),
        pytest.param(429, HTTP_DATE, 30.0, id="429-http-date"),
        pytest.param(503, "yesterday-ish", None, id="unreadable"),
        pytest.param(400, "5", 5.0, id="400-seconds"),
    ],
)
def test_retry_after_propagated(status: int, retry_after: str, expected: float | None) -> None:
    err = parse_error(
        body={"error": "temporarily_unavailable"},
        status=status,
        headers={"Retry-After": retry_after},
    )
    assert expected == err.retry_after


def test_retry_after_read_case_insensitively_from_aiohttp_headers() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"retry-after": "9"})
    with pytest.raises(TokenResponseError) as caught:
        parse_token_response(
            make_provider(),
            status=503,
            headers=headers,
            body=b"",
            issued_at=ISSUED_AT,
            wall_now=WALL_NOW,
        )
    assert 9.0 == caught.value.retry_after


def test_no_retry_after_is_none() -> None:
    assert parse_error(body=b"", status=503).retry_after is None


def test_odd_retry_after_does_not_break_a_success() -> None:
    token = parse(body={"access_token": "tok"}, headers={"Retry-After": "²"})
    assert "tok" == token.access_token


@pytest.mark.parametrize(
    ("body", "retryable"),
    [
        pytest.param({"error": "invalid_grant"}, False, id="invalid_grant"),
        pytest.param({"error": "server_error"}, True, id="server_error"),
        pytest.param({"error": "invalid_client", "access_token": "tok"}, False, id="with-token"),
    ],
)
def test_200_with_error_field_is_an_error(body: dict[str, str], retryable: bool) -> None:
    err = parse_error(body=body, status=200)
    assert retryable == err.retryable
    assert body["error"] == err.error
    assert 200 == err.status


# ---------------------------------------------------------------------------
# Pay-me envelope


def payme_body(
    *, success: object = True, code: str | None = "00", messages: list[str] | None = None
) -> dict[str, object]:
    status: dict[str, object] = {}
    if code is not None:
        status["code"] = code
    if messages is not None:
        status["message_ilgn"] = [
            {"locale": locale, "value": value}
            for locale, value in zip(["es_PE", "en_US", "pt_BR"], messages, strict=False)
        ]
    return {
        "action": "authorize",
        "success": success,
        "access_token": "pm-access",
        "refresh_token": "pm-refresh",
        "scope": "create:token post:charges offline_access",
        "expires_in": 86400,
        "token_type": "Bearer",
        "authorization": {"meta": {"status": status}},
    }


@pytest.mark.parametrize(
    ("body", "expected_error", "expected_message"),
    [
        pytest.param(
            payme_body(success=False, code="01", messages=["Credenciales inválidas", "Bad creds"]),
            "01",
            "Credenciales inválidas; Bad creds",
            id="false-01-messages",
        ),
        pytest.param(
            payme_body(success=True, code="01", messages=["Usuario bloqueado"]),
            "01",
            "Usuario bloqueado",
            id="true-but-01",
        ),
        pytest.param(
            payme_body(success=False, code=None),
            "success=false",
            "success is false",
            id="false-without-status",
        ),
        pytest.param(
            payme_body(success=False, code="00", messages=[]),
            "00",
            "success is false",
            id="false-with-00",
        ),
    ],
)
def test_payme_envelope_failure(
    body: dict[str, object], expected_error: str, expected_message: str
) -> None:
    err = parse_error(payme_provider(), body=body, status=200)
    assert expected_error == err.error
    assert expected_message == err.description
    assert expected_message in str(err)
    assert "payme-development" == err.provider
    assert err.retryable


def test_payme_envelope_success() -> None:
    token = parse(payme_provider(), body=payme_body(success=True, code="00"))
    assert "pm-access" == token.access_token
    assert 86399.0 == token.lifetime
    assert Secret("pm-refresh") == token.refresh_token
    assert "create:token post:charges offline_access" == token.scope


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"success": True}, None, id="success-only"),
        pytest.param({}, None, id="empty"),
        pytest.param(payme_body(), None, id="full-success"),
        pytest.param(payme_body(success=False, code="01"), ("01", "success is false"), id="01"),
        pytest.param(
            payme_body(success=False, code="01", messages=["a", "b"]), ("01", "a; b"), id="msgs"
        ),
        pytest.param(
            {"success": False, "authorization": "junk"},
            ("success=false", "success is false"),
            id="junk-authorization",
        ),
        pytest.param(
            {
                "success": False,
                "authorization": {
                    "meta": {
                        "status": {
                            "code": "01",
                            "message_ilgn": [{"value": 3}, "x", {"value": "ok"}],
                        }
                    }
                },
            },
            ("01", "ok"),
            id="odd-messages",
        ),
    ],
)
def test_envelope_failure_unit(data: dict[str, object], expected: tuple[str, str] | None) -> None:
    assert expected == payme.envelope_failure(data)


def test_envelope_is_not_consulted_for_other_providers() -> None:
    token = parse(body=payme_body(success=False, code="01"))
    assert "pm-access" == token.access_token


# ---------------------------------------------------------------------------
# errors never contain secrets

LONG_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("status", "body", "leaked"),
    [
        pytest.param(
            401,
            {"error": "invalid_client", "error_description": f"client secret {TRICKY_SECRET} bad"},
            TRICKY_SECRET,
            id="short-client-secret-in-description",
        ),
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": "password hunter2-pw is wrong"},
            "hunter2-pw",
            id="password-in-description",
        ),
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": "refresh token held-rt-1 expired"},
            "held-rt-1",
            id="configured-refresh-token-in-description",
        ),
        pytest.param(
            400,
            {"error": f"bad_{TRICKY_SECRET}", "error_description": "x"},
            TRICKY_SECRET,
            id="client-secret-in-error-code",
        ),
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": f"token {LONG_TOKEN} revoked"},
            LONG_TOKEN,
            id="long-token-in-description",
        ),
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": f"token\n{LONG_TOKEN[:40]}\nrevoked"},
            LONG_TOKEN[:40],
            id="long-token-between-newlines",
        ),
        pytest.param(
            502,
            f"<html><body>secret={TRICKY_SECRET} token={LONG_TOKEN}</body></html>".encode(),
            TRICKY_SECRET,
            id="client-secret-in-html-page",
        ),
        pytest.param(
            502,
            f"<html>{LONG_TOKEN}</html>".encode(),
            LONG_TOKEN[:24],
            id="long-token-in-html-page",
        ),
        pytest.param(
            200,
            {"error": "invalid_client", "error_description": f"secret {TRICKY_SECRET}"},
            TRICKY_SECRET,
            id="client-secret-in-200-error",
        ),
    ],
)
def test_errors_never_contain_secrets(status: int, body: object, leaked: str) -> None:
    provider = make_provider(
        grant_type="password",
        username="alice",
        password="hunter2-pw",
        client_secret=TRICKY_SECRET,
        refresh_token="held-rt-1",
    )
    err = parse_error(provider, body=body, status=status)
    assert leaked not in str(err)
    assert leaked not in repr(err)
    assert leaked not in (err.description or "")
    assert leaked not in (err.error or "")
    assert all(leaked not in str(arg) for arg in err.args)


def test_payme_envelope_message_never_contains_secrets() -> None:
    body = payme_body(
        success=False, code="01", messages=[f"clave pm-password invalida {LONG_TOKEN}"]
    )
    err = parse_error(payme_provider(), body=body, status=200)
    for leaked in ("pm-password", LONG_TOKEN[:24]):
        assert leaked not in str(err)
        assert leaked not in repr(err)
        assert leaked not in (err.description or "")


def test_redaction_keeps_the_rest_of_the_message() -> None:
    provider = make_provider(client_secret=TRICKY_SECRET)
    err = parse_error(
        provider,
        body={"error": "invalid_client", "error_description": f"secret {TRICKY_SECRET} is bad"},
        status=401,
    )
    assert "secret [redacted] is bad" == err.description


def test_refresh_token_quoted_back_is_redacted() -> None:
    provider = generic.provider(
        name="acme",
        token_url="https://auth.acme.test/token",
        api="https://api.acme.test",
        client_id="id",
        client_secret="sec",
    )
    body = b'{"error": "invalid_grant", "error_description": "rt-short is spent"}'
    with pytest.raises(TokenResponseError) as info:
        parse_token_response(
            provider,
            status=400,
            headers={},
            body=body,
            issued_at=0.0,
            wall_now=0.0,
            refresh_token=Secret("rt-short"),
        )
    assert "rt-short" not in str(info.value)
    assert "rt-short" not in (info.value.description or "")


# ---------------------------------------------------------------------------
# one status rule; provider text made safe to print


@pytest.mark.parametrize("status", [0, *range(100, 1000)])
def test_retryability_and_failure_kind_follow_one_status_rule(status: int) -> None:
    # Without an OAuth error code, the status alone decides both; a retryable
    # status is never "rejected" and a "rejected" one is never retried.
    err = parse_error(make_provider(), body=b"", status=status)
    if 200 <= status < 300:
        return
    kind = failure_kind(err)
    assert err.retryable == (kind != "rejected"), kind
    expected = {429: "throttled", 408: "server_error", 425: "server_error"}.get(status)
    if expected is None:
        if 400 <= status < 500 or 100 <= status < 400:
            expected = "rejected"
        elif 500 <= status < 600:
            expected = "server_error"
        else:
            expected = "bad_response"  # not an HTTP status at all
    assert expected == kind


@pytest.mark.parametrize(
    "char",
    [
        *"\x00\x07\x08\x1b\x7f\x80\x85\x9b\x9f",
        *"\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
        "\u061c",  # Arabic letter mark
        "\ufeff",  # zero-width no-break space
        "\ud800",  # a lone surrogate, as a JSON "\\ud800" escape decodes
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_scrub_replaces_controls_and_bidi_characters(char: str) -> None:
    scrubbed = scrub(f"before{char}after {char}x")
    assert char not in scrubbed
    # NEL (U+0085) is whitespace, and whitespace runs become one space.
    assert ("before after x" if char.isspace() else "before?after ?x") == scrubbed
    assert scrubbed.isprintable()


def test_scrub_keeps_ordinary_non_ascii_text() -> None:
    assert "clave inválida — 無効 ✓" == scrub("clave\tinválida\n— 無効 ✓")


def test_control_characters_in_an_error_never_reach_the_message() -> None:
    body = {"error": "invalid_request\x1b[2J", "error_description": "a\u202eb\x85c\u2066d"}
    err = parse_error(make_provider(), body=body, status=400)
    for text in (str(err), err.description or "", err.error or ""):
        assert text.isprintable(), repr(text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"null", "token response is JSON null, not a JSON object", id="null"),
        pytest.param(b"[1]", "token response is a JSON array, not a JSON object", id="array"),
        pytest.param(b'"x"', "token response is a JSON string, not a JSON object", id="string"),
        pytest.param(b"7", "token response is a JSON number, not a JSON object", id="number"),
        pytest.param(b"{trunc", "token response is not JSON", id="not-json"),
    ],
)
def test_a_2xx_body_that_is_not_an_object_says_what_it_is(body: bytes, expected: str) -> None:
    err = parse_error(make_provider(), body=body, status=200)
    assert err.message == expected
    assert err.retryable


# ---------------------------------------------------------------------------
# Whole error messages: what was wrong, named


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": "The code expired."},
            "token endpoint answered HTTP 400: invalid_grant (The code expired.)",
            id="error-and-description",
        ),
        pytest.param(
            400,
            {"error": "invalid_grant"},
            "token endpoint answered HTTP 400: invalid_grant",
            id="error-only",
        ),
        pytest.param(
            400,
            {"error_description": "The code expired."},
            "token endpoint answered HTTP 400 (The code expired.)",
            id="description-only",
        ),
        pytest.param(400, {}, "token endpoint answered HTTP 400", id="empty-object"),
        pytest.param(503, b"", "token endpoint answered HTTP 503", id="empty-body"),
        pytest.param(
            502,
            b"<html>Bad gateway " + b"upstream down " * 10 + b"</html>",
            # The body quoted, cut to 80 characters (the last one an ellipsis).
            "token endpoint answered HTTP 502: "
            + ("<html>Bad gateway " + "upstream down " * 10)[:79]
            + "…",
            id="not-json-quoted-and-cut",
        ),
    ],
)
def test_an_error_answer_is_described_whole(status: int, body: object, message: str) -> None:
    err = parse_error(body=body, status=status)
    assert f"[test] {message}" == str(err)


def test_an_error_in_a_2xx_answer_keeps_its_description() -> None:
    body = {"error": "invalid_grant", "error_description": "Grant revoked."}
    err = parse_error(body=body, status=200)
    assert "[test] token endpoint answered HTTP 200 with error invalid_grant" == str(err)
    assert ("invalid_grant", "Grant revoked.") == (err.error, err.description)


def test_the_basic_credentials_quoted_back_are_redacted_whole() -> None:
    credentials = basic_credentials("client-1", "secret-1").removeprefix("Basic ")
    body = {"error": "invalid_client", "error_description": f"bad credentials {credentials} sent"}
    err = parse_error(body=body, status=401)
    assert "bad credentials [redacted] sent" == err.description


def test_an_envelope_failure_code_is_cut_to_16_characters() -> None:
    code = "E-4711 card-issuer-declined"
    err = parse_error(payme_provider(), body=payme_body(success=False, code=code), status=200)
    assert code[:15] + "…" == err.error
    assert f"[payme-development] provider reported failure {code[:15]}…: success is false" == str(
        err
    )


def test_a_signed_client_assertion_carries_the_given_time_and_jti() -> None:
    provider = make_provider(client_auth="client_secret_jwt", client_secret="k" * 32)
    request = build_token_request(provider, now=1_700_000_000.0, jti="jti-0001")
    assertion = body_of(request)["client_assertion"]
    payload = assertion.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (1_700_000_000, "jti-0001") == (claims["iat"], claims["jti"])
