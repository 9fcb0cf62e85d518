"""Signed client assertions: RFC 7523 §2.2 and OpenID Connect Core §9.

``private_key_jwt`` signs with the client's private key (RS256, PS256,
ES256); ``client_secret_jwt`` with the client secret (HS256). Every token
request carries a fresh assertion: ``iss`` and ``sub`` are the client id,
``aud`` the token endpoint, ``jti`` unique, ``iat`` now and ``exp`` a short
lifetime later. The JWS itself is made by PyJWT, an optional extra
(``pip install 'aiopay-auth[jwt]'``) imported only when a provider uses one
of these methods. Sans-I/O: the time and the ``jti`` come in as arguments.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Literal

import attrs

from ._check import instance_of, number
from ._secret import Secret
from .exceptions import ConfigError


__all__ = [
    "ASSERTION_TYPE",
    "DEFAULT_ASSERTION_LIFETIME",
    "AssertionAlg",
    "ClientAssertion",
    "sign_assertion",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""The ``client_assertion_type`` of a JWT client assertion (RFC 7523 §2.2)."""

DEFAULT_ASSERTION_LIFETIME = 60.0
"""Seconds an assertion is valid (its ``exp`` minus its ``iat``) unless set otherwise."""

AssertionAlg = Literal["RS256", "PS256", "ES256", "HS256"]
"""The JWS algorithms supported: the private-key ones, and HS256 for the secret."""

_KEY_ALGS = ("RS256", "PS256", "ES256")
_SECRET_ALGS = ("HS256",)
_EXTRA = "pip install 'aiopay-auth[jwt]'"


def _opt_secret(value: str | Secret | None) -> Secret | None:
    instance_of("ClientAssertion.key", value, (str, Secret, type(None)))
    return value if value is None or isinstance(value, Secret) else Secret(value)


def _opt_kid(value: str | None) -> str | None:
    return instance_of("ClientAssertion.kid", value, (str, type(None)))


def _opt_audience(value: str | None) -> str | None:
    return instance_of("ClientAssertion.audience", value, (str, type(None)))


def _lifetime(instance: object, attribute: object, value: float) -> None:
    # The one rule for numbers: a finite, positive int or float, not a bool
    # (True would have signed 1-second assertions).
    number("ClientAssertion.lifetime", value)


@attrs.frozen(kw_only=True)
class ClientAssertion:
    """How a provider's client assertions are signed.

    Give it to :class:`~aiopay_auth.Provider` (``assertion=``) with
    ``client_auth="private_key_jwt"`` (then *key* is required) or
    ``client_auth="client_secret_jwt"`` (the client secret is the key).

    Attributes:
        key: The PEM private key (RSA for RS256/PS256, EC P-256 for ES256).
            A secret: never shown in ``repr()``, logs or errors.
        alg: The JWS algorithm; by default RS256 for ``private_key_jwt``
            and HS256 for ``client_secret_jwt``.
        kid: The key id put in the JWS header, so the server can pick the
            public key among those it holds for the client.
        lifetime: Seconds from ``iat`` to ``exp`` (default 60): short, since
            each assertion is made for one request. A positive int or float
            (not a bool), at most 600 (checked by the provider).
        audience: The ``aud`` claim; by default the token endpoint URL
            (OIDC Core §9). Some servers want their issuer URL instead.
    """

    key: Secret | None = attrs.field(default=None, converter=_opt_secret, repr=False)
    alg: AssertionAlg | None = None
    kid: str | None = attrs.field(default=None, converter=_opt_kid)
    lifetime: float = attrs.field(default=DEFAULT_ASSERTION_LIFETIME, validator=_lifetime)
    audience: str | None = attrs.field(default=None, converter=_opt_audience)


def _jose() -> ModuleType:
    """PyJWT, imported when first needed; a ConfigError naming the extra when missing."""
    try:
        import jwt  # noqa: PLC0415 - optional extra, imported only when used
    except ImportError:
        msg = f"signed client assertions need PyJWT: {_EXTRA}"
        raise ConfigError(msg) from None
    return jwt


def algorithm(method: str, assertion: ClientAssertion | None) -> str:
    """The JWS algorithm *method* signs with."""
    if assertion is not None and assertion.alg is not None:
        return assertion.alg
    return "HS256" if method == "client_secret_jwt" else "RS256"


def signing_key(method: str, assertion: ClientAssertion | None, client_secret: Secret) -> str:
    """The key text that signs: the private key, or the client secret."""
    if method == "client_secret_jwt":
        return client_secret.reveal()
    return assertion.key.reveal() if assertion is not None and assertion.key else ""


def sign_assertion(
    method: str,
    assertion: ClientAssertion | None,
    *,
    client_id: str,
    client_secret: Secret,
    audience: str,
    now: float,
    jti: str,
) -> str:
    """Sign one client assertion (a compact JWS).

    Args:
        method: ``"private_key_jwt"`` or ``"client_secret_jwt"``.
        assertion: The signing settings (``None``: the defaults).
        client_id: ``iss`` and ``sub``.
        client_secret: The HS256 key for ``client_secret_jwt``.
        audience: The default ``aud`` (the token endpoint URL).
        now: Wall-clock time (seconds since the epoch) for ``iat``/``exp``.
        jti: A value never used before, so the server can refuse a replay.

    Returns:
        The assertion, to send as ``client_assertion``.
    """
    jwt = _jose()
    lifetime = DEFAULT_ASSERTION_LIFETIME if assertion is None else assertion.lifetime
    issued = int(now)
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": (assertion.audience if assertion and assertion.audience else None) or audience,
        "jti": jti,
        "iat": issued,
        "exp": issued + math.ceil(lifetime),
    }
    headers = {"kid": assertion.kid} if assertion is not None and assertion.kid else None
    key = signing_key(method, assertion, client_secret)
    signed: str = jwt.encode(claims, key, algorithm=algorithm(method, assertion), headers=headers)
    return signed


def assertion_problems(
    method: str, assertion: ClientAssertion | None, client_secret: Secret
) -> Iterable[str]:
    """What keeps *method* from signing with these settings; never quotes a key."""
    if method not in ("private_key_jwt", "client_secret_jwt"):
        if assertion is not None:
            yield "assertion= goes with client_auth 'private_key_jwt' or 'client_secret_jwt'"
        return
    allowed = _KEY_ALGS if method == "private_key_jwt" else _SECRET_ALGS
    alg = algorithm(method, assertion)
    if alg not in allowed:
        yield f"assertion alg for {method} must be one of {allowed}, not {alg!r}"
        return
    if assertion is not None and not (
        math.isfinite(assertion.lifetime) and 0 < assertion.lifetime <= 600
    ):
        yield "assertion lifetime must be in (0, 600] seconds"
    if method == "private_key_jwt" and (assertion is None or not assertion.key):
        yield "client_auth 'private_key_jwt' needs assertion=ClientAssertion(key=<PEM>)"
        return
    if method == "client_secret_jwt" and not client_secret:
        yield "client_auth 'client_secret_jwt' needs client_secret"
        return
    try:
        jwt = _jose()
    except ConfigError as exc:
        yield f"client_auth {method!r}: {exc.message}"
        return
    if method == "private_key_jwt" and not jwt.algorithms.has_crypto:
        yield f"client_auth 'private_key_jwt' needs the cryptography package: {_EXTRA}"
        return
    # One trial signature: a key that cannot sign fails here, at
    # construction, not in every token request.
    with warnings.catch_warnings():
        warnings.simplefilter("error", jwt.InsecureKeyLengthWarning)
        try:
            jwt.encode({}, signing_key(method, assertion, client_secret), algorithm=alg)
        except jwt.InsecureKeyLengthWarning:
            what = "client_secret" if method == "client_secret_jwt" else "assertion key"
            yield f"{what} is too short for {alg} (RFC 7518 §3)"
        except (ValueError, TypeError, jwt.PyJWTError):
            yield f"assertion key is not a PEM private key that can sign {alg}"
