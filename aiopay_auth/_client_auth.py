"""The body fields that authenticate the client, for each ``client_auth`` but Basic.

* ``body``: ``client_id`` and ``client_secret`` (RFC 6749 §2.3.1);
* ``private_key_jwt`` / ``client_secret_jwt``: ``client_id``,
  ``client_assertion_type`` and a fresh ``client_assertion`` (RFC 7523 §2.2,
  OIDC Core §9);
* ``tls_client_auth`` / ``self_signed_tls_client_auth``: ``client_id`` only;
  the client certificate on the TLS connection authenticates (RFC 8705 §2).

(``basic`` puts them in the ``Authorization`` header instead: see
:func:`aiopay_auth._oauth.basic_credentials`.) Sans-I/O: the time and the
``jti`` come in as arguments.
"""

from __future__ import annotations

from ._assertion import ASSERTION_TYPE, sign_assertion
from ._provider import Provider
from .exceptions import ConfigError


__all__ = ["JWT_AUTHS", "TLS_AUTHS", "client_auth_fields"]

JWT_AUTHS = frozenset({"private_key_jwt", "client_secret_jwt"})
"""The methods that send a signed client assertion."""

TLS_AUTHS = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
"""The methods where the TLS client certificate authenticates (RFC 8705)."""


def client_auth_fields(provider: Provider, *, now: float | None, jti: str | None) -> dict[str, str]:
    """The body fields authenticating *provider*'s client in one token request.

    Args:
        provider: The provider profile (its ``client_auth`` is not ``basic``).
        now: Wall-clock time for a signed assertion's ``iat`` and ``exp``.
        jti: A value never used before, for a signed assertion.

    Returns:
        Field name to value (may hold the client secret or an assertion).

    Raises:
        ConfigError: A signed assertion is needed and *now* or *jti* is missing.
    """
    method = provider.client_auth
    fields = {"client_id": provider.client_id}
    if method in TLS_AUTHS:
        return fields
    if method not in JWT_AUTHS:
        fields["client_secret"] = provider.client_secret.reveal()
        return fields
    if now is None or not jti:
        msg = f"a token request with client_auth={method!r} needs now= and jti="
        raise ConfigError(msg, provider=provider.name)
    fields["client_assertion_type"] = ASSERTION_TYPE
    fields["client_assertion"] = sign_assertion(
        method,
        provider.assertion,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        audience=str(provider.token_url),
        now=now,
        jti=jti,
    )
    return fields
