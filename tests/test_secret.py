"""Tests of ``Secret``, ``Token`` and the errors: nothing secret shows, everything pickles."""

from __future__ import annotations

import copy
import hashlib
import pickle
import re
from typing import Any

import pytest

from aiopay_auth._secret import Secret, fingerprint
from aiopay_auth._token import Token
from aiopay_auth.exceptions import (
    AuthError,
    ConfigError,
    TokenEndpointError,
    TokenRequestError,
    TokenResponseError,
    TokenUnavailableError,
)


VALUE = "sup3r-s3cret-value"
ACCESS = "access-token-value-0123456789"
REFRESH = "refresh-token-value-9876543210"


# ---------------------------------------------------------------------------
# Secret


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(repr, id="repr"),
        pytest.param(str, id="str"),
        pytest.param(lambda s: f"{s}", id="f-string"),
        pytest.param(lambda s: f"{s!r}", id="f-string-repr"),
        pytest.param(lambda s: "%s" % (s,), id="percent"),  # noqa: UP031
        pytest.param(lambda s: str([s]), id="in-list"),
        pytest.param(lambda s: str({"k": s}), id="in-dict"),
    ],
)
def test_secret_hides_its_value(show: Any) -> None:
    shown = show(Secret(VALUE))
    assert VALUE not in shown
    assert "Secret('***')" in shown


def test_secret_reveal() -> None:
    assert VALUE == Secret(VALUE).reveal()
    assert "" == Secret("").reveal()


@pytest.mark.parametrize(
    ("value", "expected"), [pytest.param("x", True, id="set"), pytest.param("", False, id="empty")]
)
def test_secret_truthiness(value: str, expected: bool) -> None:
    assert expected == bool(Secret(value))


def test_secret_equality_and_hash() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert hash(Secret(VALUE)) == hash(Secret(VALUE))
    assert 2 == len({Secret("a"), Secret("a"), Secret("b")})
    assert Secret(VALUE) != VALUE  # a secret is not its text
    assert VALUE != Secret(VALUE)


def test_secret_rejects_non_strings() -> None:
    value: Any = b"bytes"
    with pytest.raises(TypeError, match="Secret takes a str, not bytes"):
        Secret(value)


def test_secret_is_immutable() -> None:
    secret = Secret(VALUE)
    with pytest.raises(AttributeError):
        secret.other = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_pickle_round_trip(protocol: int) -> None:
    restored = pickle.loads(pickle.dumps(Secret(VALUE), protocol=protocol))  # noqa: S301
    assert isinstance(restored, Secret)
    assert Secret(VALUE) == restored
    assert VALUE == restored.reveal()


def test_secret_copy() -> None:
    secret = Secret(VALUE)
    assert secret == copy.copy(secret)
    assert VALUE == copy.deepcopy(secret).reveal()


def test_secret_fingerprint() -> None:
    expected = hashlib.sha256(VALUE.encode()).hexdigest()[:12]
    assert expected == Secret(VALUE).fingerprint
    assert expected == fingerprint(VALUE)
    assert VALUE not in Secret(VALUE).fingerprint


# ---------------------------------------------------------------------------
# Token


def make_token(access: str = ACCESS, **kwargs: Any) -> Token:
    fields: dict[str, Any] = {
        "issued_at": 100.0,
        "lifetime": 3600.0,
        "refresh_token": Secret(REFRESH),
        "scope": "read",
    }
    fields.update(kwargs)
    return Token.bearer(access, **fields)


def test_token_repr_hides_access_token_header_and_refresh_token() -> None:
    token = make_token()
    for shown in (repr(token), str(token)):
        assert ACCESS not in shown
        assert f"Bearer {ACCESS}" not in shown
        assert REFRESH not in shown
        assert token.fingerprint in shown  # what *is* shown tells tokens apart


def test_token_repr_hides_the_provider_supplied_scope() -> None:
    # Red team s20: a hostile endpoint echoes the client secret in `scope`.
    token = make_token(scope=f"payments {VALUE}")
    assert token.scope == f"payments {VALUE}"  # kept verbatim for the application
    for shown in (repr(token), str(token)):
        assert VALUE not in shown
        assert "payments" not in shown


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"x {VALUE.upper()}", id="no-secret-case-differs"),
        pytest.param("ordinary words, 42% off, a+b", id="ordinary"),
    ],
)
def test_redactor_leaves_text_without_a_secret_alone(text: str) -> None:
    from aiopay_auth._secret import Redactor

    assert Redactor([Secret(VALUE)]).quote(text) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"s": "' + "".join(f"\\u{ord(c):04X}" for c in "pa/ss") + '"}', id="json-u"),
        pytest.param("x pa%2Fss%2", id="broken-percent-still-decodes"),
        pytest.param("x cGEvc3M=", id="base64"),
        pytest.param("x Q1cGEvc3M=", id="base64-misaligned"),
        pytest.param("x pa%2f%73s", id="mixed-percent"),
    ],
)
def test_redactor_withholds_text_that_still_decodes_to_a_secret(text: str) -> None:
    from aiopay_auth._secret import WITHHELD, Redactor

    quoted = Redactor([Secret("pa/ss")]).quote(text)
    assert "pa/ss" not in quoted
    assert quoted == WITHHELD or "[redacted]" in quoted


def test_token_bearer_fields() -> None:
    token = make_token(token_type="bearer")
    assert f"Bearer {ACCESS}" == token.header
    assert "bearer" == token.token_type
    assert 100.0 == token.issued_at
    assert 3700.0 == token.expires_at
    assert 3600.0 == token.lifetime
    assert Secret(REFRESH) == token.refresh_token
    assert "read" == token.scope


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(100.0, 3600.0, id="at-issue"),
        pytest.param(3000.0, 700.0, id="later"),
        pytest.param(3700.0, 0.0, id="at-expiry"),
        pytest.param(4000.0, -300.0, id="expired"),
    ],
)
def test_token_remaining(now: float, expected: float) -> None:
    assert expected == make_token().remaining(now)


def test_token_fingerprint() -> None:
    one, two = make_token("token-one"), make_token("token-two")
    assert re.fullmatch(r"[0-9a-f]{12}", one.fingerprint)
    assert re.fullmatch(r"[0-9a-f]{12}", two.fingerprint)
    assert one.fingerprint != two.fingerprint
    assert fingerprint("token-one") == one.fingerprint
    assert make_token("token-one", issued_at=5.0).fingerprint == one.fingerprint


def test_tokens_compare_by_identity() -> None:
    one, again = make_token(), make_token()
    assert one == one  # noqa: PLR0124
    assert one != again


def test_token_is_frozen() -> None:
    token = make_token()
    with pytest.raises(AttributeError):
        token.access_token = "other"  # type: ignore[misc]


def test_token_pickle_round_trip() -> None:
    token = make_token()
    restored = pickle.loads(pickle.dumps(token))  # noqa: S301
    assert (token.access_token, token.header, token.expires_at, token.refresh_token) == (
        restored.access_token,
        restored.header,
        restored.expires_at,
        restored.refresh_token,
    )


# ---------------------------------------------------------------------------
# errors pickle with their attributes


ERRORS: list[Any] = [
    pytest.param(AuthError("root", provider="p", retryable=True), id="AuthError"),
    pytest.param(AuthError("no provider"), id="AuthError-bare"),
    pytest.param(ConfigError("bad config", provider="p"), id="ConfigError"),
    pytest.param(TokenEndpointError("endpoint", provider="p"), id="TokenEndpointError"),
    pytest.param(TokenRequestError("connect failed", provider="p"), id="TokenRequestError"),
    pytest.param(
        TokenResponseError(
            "HTTP 503",
            provider="cm",
            status=503,
            error="temporarily_unavailable",
            description="try later",
            retryable=True,
            retry_after=12.5,
        ),
        id="TokenResponseError",
    ),
    pytest.param(
        TokenResponseError("HTTP 401", provider="vonage-nam", status=401, error="invalid_client"),
        id="TokenResponseError-unhealable",
    ),
    pytest.param(
        TokenUnavailableError(
            "gave up",
            provider="payme",
            retryable=False,
            last_error=TokenResponseError("HTTP 400", provider="payme", status=400, error="01"),
        ),
        id="TokenUnavailableError",
    ),
]

ATTRIBUTES = (
    "provider",
    "retryable",
    "status",
    "error",
    "description",
    "retry_after",
    "args",
)


@pytest.mark.parametrize("err", ERRORS)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_errors_pickle_with_attributes(err: AuthError, protocol: int) -> None:
    restored = pickle.loads(pickle.dumps(err, protocol=protocol))  # noqa: S301
    assert type(err) is type(restored)
    assert str(err) == str(restored)
    for name in ATTRIBUTES:
        assert getattr(err, name, None) == getattr(restored, name, None), name
    if isinstance(err, TokenUnavailableError):
        assert isinstance(restored, TokenUnavailableError)
        assert isinstance(restored.last_error, TokenResponseError)
        assert isinstance(err.last_error, TokenResponseError)
        assert err.last_error.error == restored.last_error.error
        assert err.last_error.status == restored.last_error.status


def test_token_response_error_pickle_explicit() -> None:
    err = TokenResponseError(
        "m", provider="cm", status=429, error="slow_down", retryable=True, retry_after=3.0
    )
    restored = pickle.loads(pickle.dumps(err))  # noqa: S301
    assert isinstance(restored, TokenResponseError)
    assert (429, "slow_down", 3.0, "cm", True) == (
        restored.status,
        restored.error,
        restored.retry_after,
        restored.provider,
        restored.retryable,
    )
    assert "[cm] m" == str(restored)


def test_config_error_stays_a_value_error_after_pickling() -> None:
    restored = pickle.loads(pickle.dumps(ConfigError("x", provider="p")))  # noqa: S301
    assert isinstance(restored, ValueError)
    assert not isinstance(restored, AuthError)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        pytest.param(AuthError("boom", provider="cm"), "[cm] boom", id="with-provider"),
        pytest.param(AuthError("boom"), "boom", id="without-provider"),
        pytest.param(TokenRequestError("down", provider="oro"), "[oro] down", id="request"),
    ],
)
def test_error_str(err: AuthError, expected: str) -> None:
    assert expected == str(err)


def test_request_error_is_always_retryable() -> None:
    assert TokenRequestError("x").retryable
    assert TokenUnavailableError("x").retryable
    assert not AuthError("x").retryable
