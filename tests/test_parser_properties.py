"""Property tests: ``parse_token_response`` returns a ``Token`` or raises ``TokenResponseError``."""

from __future__ import annotations

import email.utils
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiopay_auth import Provider
from aiopay_auth._oauth import MAX_LIFETIME, parse_retry_after, parse_token_response
from aiopay_auth._token import Token
from aiopay_auth.exceptions import TokenResponseError
from aiopay_auth.providers import cm, generic, payme, vonage


PROVIDERS = [
    cm.provider(client_id="cm-id", client_secret="cm-secret"),
    vonage.provider(region="emea", client_id="v-id", client_secret="v-secret"),
    payme.provider(
        environment="development",
        client_id="pm-id",
        client_secret="pm-secret",
        username="merchant",
        password="pm-password",
    ),
    generic.provider(
        name="generic",
        token_url="https://auth.example/token",
        api="https://api.example",
        client_id="g-id",
        client_secret="g-secret",
        default_lifetime=1.0,
    ),
]

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

providers = st.sampled_from(PROVIDERS)
statuses = st.integers(100, 599)
wall_clocks = st.floats(0.0, 4e9)
issued = st.floats(-1e9, 1e9)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

access_tokens = st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True)
expires_ins = (
    json_values
    | st.integers(-(10**20), 10**20)
    | st.from_regex(r"\s*[+-]?[0-9]{0,20}(\.[0-9]*)?\s*", fullmatch=True)
    | st.sampled_from([0, 1, 3600, 86400, 86401, 10**12, "3600", " 42 ", math.nan, math.inf])
)
token_types = st.sampled_from(["Bearer", "bearer", "BEARER", "mac", "", "Bearer "]) | json_values

# Bodies shaped like token responses, so that the success path and each check are reached.
token_like = st.fixed_dictionaries(
    {},
    optional={
        "access_token": access_tokens | json_values,
        "token_type": token_types,
        "expires_in": expires_ins,
        "refresh_token": st.text(max_size=20) | json_values,
        "scope": st.text(max_size=20) | json_values,
        "error": st.sampled_from(["invalid_client", "server_error", "slow_down", "x"])
        | json_values,
        "error_description": st.text(max_size=60) | json_values,
        "success": st.booleans() | json_values,
        "authorization": st.fixed_dictionaries(
            {
                "meta": st.fixed_dictionaries(
                    {
                        "status": st.fixed_dictionaries(
                            {},
                            optional={
                                "code": st.sampled_from(["00", "01"]) | json_values,
                                "message_ilgn": st.lists(
                                    st.fixed_dictionaries(
                                        {"locale": st.just("es"), "value": json_values}
                                    ),
                                    max_size=3,
                                )
                                | json_values,
                            },
                        )
                    }
                )
            }
        )
        | json_values,
    },
)

http_dates = st.integers(0, 253402300799).map(lambda t: email.utils.formatdate(t, usegmt=True))
retry_afters = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.from_regex(r"\s*[0-9]{1,30}\s*", fullmatch=True),
    http_dates,
    st.sampled_from(["²", "١٢", "Wed, 21 Oct 2015 07:28:00 -0000", "Mon, 01 Jan 99999 00:00:00"]),
)


def dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(dumps),
    token_like.map(dumps),
    token_like.map(dumps).map(lambda b: b[: len(b) // 2]),  # truncated JSON
)


def check(
    provider: Provider,
    *,
    status: int,
    retry_after: str | None,
    body: bytes,
    issued_at: float,
    wall_now: float,
) -> Token | TokenResponseError:
    """Parse, and check the invariants of whichever outcome it was."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    outcome: Token | TokenResponseError
    try:
        outcome = parse_token_response(
            provider,
            status=status,
            headers=headers,
            body=body,
            issued_at=issued_at,
            wall_now=wall_now,
        )
    except TokenResponseError as exc:
        outcome = exc
    if isinstance(outcome, TokenResponseError):
        assert status == outcome.status
        assert provider.name == outcome.provider
        assert isinstance(outcome.retryable, bool)
        assert outcome.retry_after is None or outcome.retry_after >= 0
        message = str(outcome)
        assert "\n" not in message
        assert len(message) < 600
        assert provider.client_secret.reveal() not in message
        if provider.password is not None:
            assert provider.password.reveal() not in message
        return outcome
    token = outcome
    assert 200 <= status < 300
    assert 0 < token.lifetime <= MAX_LIFETIME
    assert issued_at == token.issued_at
    assert token.header == "Bearer " + token.access_token
    assert token.access_token
    assert token.token_type.lower() == "bearer"
    return token


@SETTINGS
@given(
    provider=providers,
    status=statuses,
    retry_after=retry_afters,
    body=bodies,
    issued_at=issued,
    wall_now=wall_clocks,
)
def test_any_response_gives_token_or_typed_error(
    *,
    provider: Provider,
    status: int,
    retry_after: str | None,
    body: bytes,
    issued_at: float,
    wall_now: float,
) -> None:
    check(
        provider,
        status=status,
        retry_after=retry_after,
        body=body,
        issued_at=issued_at,
        wall_now=wall_now,
    )


@SETTINGS
@given(
    provider=providers,
    data=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    access_token=access_tokens,
    expires_in=expires_ins,
    status=st.integers(200, 299),
    retry_after=retry_afters,
)
def test_valid_access_token_gives_bounded_lifetime(
    *,
    provider: Provider,
    data: dict[str, object],
    access_token: str,
    expires_in: object,
    status: int,
    retry_after: str | None,
) -> None:
    data = {
        key: value
        for key, value in data.items()
        if key not in {"error", "success", "authorization", "token_type"}
    }
    data |= {"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"}
    outcome = check(
        provider,
        status=status,
        retry_after=retry_after,
        body=dumps(data),
        issued_at=0.0,
        wall_now=1.7e9,
    )
    if isinstance(outcome, Token):
        assert access_token == outcome.access_token
    else:
        # Only expires_in can be wrong here, and a malformed one is worth asking again.
        assert outcome.retryable
        assert "expires_in" in str(outcome)


@SETTINGS
@given(provider=providers, access_token=access_tokens, expires_in=st.integers(1, 10**30))
def test_whole_second_lifetime_gives_one_second_up_and_is_capped(
    provider: Provider, access_token: str, expires_in: int
) -> None:
    body = dumps({"access_token": access_token, "expires_in": expires_in})
    token = parse_token_response(
        provider, status=200, headers={}, body=body, issued_at=10.0, wall_now=0.0
    )
    # Whole seconds: the issue time may have been floored, so one is given up (not from 1).
    believed = expires_in - 1 if expires_in >= 2 else expires_in
    assert min(float(believed), MAX_LIFETIME) == token.lifetime
    assert 10.0 + token.lifetime == token.expires_at


@SETTINGS
@given(value=retry_afters, wall_now=wall_clocks)
def test_parse_retry_after_never_raises(value: str | None, wall_now: float) -> None:
    delay = parse_retry_after(value, wall_now=wall_now)
    assert delay is None or delay >= 0


@SETTINGS
@given(seconds=st.integers(0, 10**9), wall_now=st.integers(0, 2 * 10**9))
def test_parse_retry_after_date_and_seconds_agree(seconds: int, wall_now: int) -> None:
    date = email.utils.formatdate(wall_now + seconds, usegmt=True)
    assert float(seconds) == parse_retry_after(str(seconds), wall_now=wall_now)
    assert float(seconds) == parse_retry_after(date, wall_now=wall_now)
