"""Provider profiles: everything the SDK needs to know about one token endpoint."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, get_args

import attrs
from yarl import URL

from ._assertion import ClientAssertion, assertion_problems
from ._check import callable_or_none, instance_of, number, type_name
from ._scope import in_scope as _in_scope
from ._secret import Secret
from .exceptions import ConfigError


__all__ = [
    "ClientAuth",
    "Encoding",
    "EnvelopeCheck",
    "Extra",
    "Grant",
    "Provider",
    "is_loopback",
    "plain_http_proxy_problem",
]

Grant = Literal["client_credentials", "password"]
"""The grant a provider is first asked with; ``refresh_token`` follows on its own."""

ClientAuth = Literal[
    "body",
    "basic",
    "private_key_jwt",
    "client_secret_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
"""
How the client authenticates to the token endpoint:

* ``body``: id and secret as body fields; ``basic``: HTTP Basic (RFC 6749 §2.3.1);
* ``private_key_jwt``: a JWT signed with the client's private key;
  ``client_secret_jwt``: one signed (HS256) with the client secret
  (RFC 7523 §2.2, OIDC Core §9; needs ``pip install 'aiopay-auth[jwt]'``);
* ``tls_client_auth`` / ``self_signed_tls_client_auth``: the client
  certificate on the TLS connection (RFC 8705 §2), set up with
  :class:`~aiopay_auth.Network` ``(ssl=...)``; the body carries only the id.
"""

Encoding = Literal["form", "json"]
"""How the token request body is encoded."""

EnvelopeCheck = Callable[[Mapping[str, object]], tuple[str, str] | None]
"""
A provider hook that inspects a decoded 2xx token response.

It returns ``None`` when the response is a success, or ``(code, message)``
when the provider's own envelope says the request failed (Pay-me's
``success: false``). Return the provider's text as it came: the caller
redacts the provider's secrets from it first, then scrubs and cuts it.
"""

Extra = tuple[tuple[str, str | Secret], ...]
"""Extra header or body-field pairs; a :class:`Secret` value is a credential."""

# The allowed values, read off the Literal types: one copy of each list.
_GRANTS: tuple[str, ...] = get_args(Grant)
_AUTHS: tuple[str, ...] = get_args(ClientAuth)
# The methods that send the client secret itself, or sign with it.
_SECRET_AUTHS = ("body", "basic", "client_secret_jwt")
_ENCODINGS: tuple[str, ...] = get_args(Encoding)
# RFC 9110 §5.1: a field name is a token; §5.5: a value is visible ASCII,
# with spaces and tabs inside. Anything else (CR, LF, NUL, non-ASCII) could
# split the request or make aiohttp refuse every token request.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?)?")
# Headers the SDK writes itself; a second copy would be ambiguous.
_OWN_HEADERS = frozenset({"accept", "content-type", "content-length", "transfer-encoding", "host"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback(host: str | None) -> bool:
    """Whether *host* names this machine (``localhost``, 127.0.0.0/8 or ``::1``)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(what: str, value: object) -> URL:
    if isinstance(value, URL):
        return value
    text = instance_of(f"Provider {what}", value, str)
    try:
        return URL(text)
    except ValueError:
        msg = f"Provider {what} is not a valid URL"
        raise ConfigError(msg) from None


def _secret(what: str, value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(instance_of(f"Provider {what}", value, str))


def _pairs(what: str, value: object) -> Extra:
    # Name the entry by its place or name, never its value: it may be a credential.
    if isinstance(value, Mapping):
        items: Iterable[object] = value.items()
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        msg = f"Provider {what} must be a mapping or (name, value) pairs, not a {type_name(value)}"
        raise ConfigError(msg)
    else:
        items = value
    pairs: list[tuple[str, str | Secret]] = []
    for index, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            msg = f"Provider {what} entry {index} must be a (name, value) pair"
            raise ConfigError(msg)
        name = instance_of(f"Provider {what} entry {index} name", item[0], str)
        entry = item[1]
        if not isinstance(entry, str | Secret):
            msg = (
                f"Provider {what} {name!r}: the value must be a str or Secret, "
                f"not a {type_name(entry)}"
            )
            raise ConfigError(msg)
        pairs.append((name, entry))
    return tuple(pairs)


# Named converters, one per field (the attrs mypy plugin reads their argument types).
def _token_url(value: str | URL) -> URL:
    return _url("token_url", value)


def _client_secret(value: str | Secret) -> Secret:
    return _secret("client_secret", value)


def _password(value: str | Secret | None) -> Secret | None:
    return None if value is None else _secret("password", value)


def _refresh_token(value: str | Secret | None) -> Secret | None:
    return None if value is None else _secret("refresh_token", value)


def _extra_fields(
    value: Mapping[str, str | Secret] | Iterable[tuple[str, str | Secret]],
) -> Extra:
    return _pairs("extra_fields", value)


def _extra_headers(
    value: Mapping[str, str | Secret] | Iterable[tuple[str, str | Secret]],
) -> Extra:
    return _pairs("extra_headers", value)


def _names_only(pairs: Extra) -> str:
    # Values may be credentials even when passed as plain strings: show names.
    return repr(tuple(name for name, _ in pairs))


def reveal(value: str | Secret) -> str:
    """The text to send on the wire for an extra header or field value."""
    return value.reveal() if isinstance(value, Secret) else value


def _scopes(value: Iterable[str | URL] | str | URL) -> tuple[URL, ...]:
    items: list[object]
    given: object = value  # untyped callers pass ints, bytes, mappings
    if isinstance(given, str | URL):
        items = [given]
    elif isinstance(given, Iterable) and not isinstance(given, bytes | Mapping):
        items = list(given)
    else:
        msg = f"Provider api must be a URL or URLs (str or yarl.URL), not a {type_name(given)}"
        raise ConfigError(msg)
    return tuple(_url("api", v) for v in items)


@attrs.frozen(kw_only=True)
class Provider:
    """A declarative description of one provider's token endpoint and API.

    Build one with a provider module (:mod:`aiopay_auth.providers`) rather
    than by hand; every field can still be set directly for a server the
    SDK does not know.

    Attributes:
        name: A label for logs, errors and statistics.
        token_url: Where tokens are requested (POST).
        api: The URLs the token may be sent to: each is an origin
            (scheme, host, port) plus a path prefix. A request is stamped
            only when its URL has one of these origins and starts with that
            origin's prefix at a path-segment boundary.
        client_id: The client identifier.
        client_secret: The client secret; not needed (and not sent) with
            ``private_key_jwt`` or the TLS methods.
        grant_type: The primary grant, ``client_credentials`` or ``password``.
        username: Resource owner name for the password grant.
        password: Resource owner password for the password grant.
        scope: The scope to ask for, space-separated, if any.
        client_auth: How the client authenticates (see :data:`ClientAuth`):
            ``"body"``, ``"basic"``, ``"private_key_jwt"``,
            ``"client_secret_jwt"``, ``"tls_client_auth"`` or
            ``"self_signed_tls_client_auth"``.
        assertion: How signed client assertions are made
            (:class:`~aiopay_auth.ClientAssertion`): required with
            ``private_key_jwt`` (the private key), optional with
            ``client_secret_jwt``.
        encoding: ``"form"`` (``application/x-www-form-urlencoded``) or ``"json"``.
        extra_fields: More body fields sent with every grant. Pass a
            :class:`Secret` value for a credential (an API key, an
            assertion): it is sent as is, hidden everywhere else, and
            redacted from the provider's answers. ``repr()`` shows only
            the names.
        extra_headers: More headers sent with every token request; names
            and values must be valid HTTP (no CR, LF or other control
            characters), and values may be :class:`Secret` as above.
        envelope: A hook that recognises a provider's failure envelope.
        refresh_token: A refresh token obtained elsewhere, used first.
        default_lifetime: Seconds a token is assumed to live when the
            provider does not send ``expires_in``.
        allow_insecure_http: Allow plain ``http://`` to hosts other than
            loopback. Off by default: a bearer token over plain HTTP is a
            leaked token.
    """

    name: str
    token_url: URL = attrs.field(converter=_token_url)
    api: tuple[URL, ...] = attrs.field(converter=_scopes)
    client_id: str
    client_secret: Secret = attrs.field(default=Secret(""), converter=_client_secret)
    grant_type: Grant = "client_credentials"
    username: str | None = None
    password: Secret | None = attrs.field(default=None, converter=_password)
    scope: str | None = None
    client_auth: ClientAuth = "body"
    assertion: ClientAssertion | None = None
    encoding: Encoding = "form"
    extra_fields: Extra = attrs.field(default=(), converter=_extra_fields, repr=_names_only)
    extra_headers: Extra = attrs.field(default=(), converter=_extra_headers, repr=_names_only)
    envelope: EnvelopeCheck | None = attrs.field(default=None, eq=False, repr=False)
    refresh_token: Secret | None = attrs.field(default=None, converter=_refresh_token)
    default_lifetime: float = 300.0
    allow_insecure_http: bool = False

    def __attrs_post_init__(self) -> None:
        try:
            self._check_types()
        except ConfigError as err:
            msg = f"provider {self.name!r}: {err}"
            raise ConfigError(msg, provider=str(self.name)) from None
        problems = list(self._problems())
        if problems:
            msg = f"provider {self.name!r}: " + "; ".join(problems)
            raise ConfigError(msg, provider=self.name)

    def _check_types(self) -> None:
        # Before the other rules, which compare and test these values.
        instance_of("name", self.name, str)
        instance_of("client_id", self.client_id, str)
        for what in ("username", "scope"):
            value = getattr(self, what)
            if value is not None:
                instance_of(what, value, str)
        for what in ("grant_type", "client_auth", "encoding"):
            instance_of(what, getattr(self, what), str)
        if self.assertion is not None:
            instance_of("assertion", self.assertion, ClientAssertion)
        callable_or_none("envelope", self.envelope)
        number("default_lifetime", self.default_lifetime, positive=False)
        instance_of("allow_insecure_http", self.allow_insecure_http, bool)

    def _problems(self) -> Iterable[str]:
        if not self.name:
            yield "name must not be empty"
        if not self.client_id:
            yield "client_id must not be empty"
        if self.grant_type not in _GRANTS:
            yield f"grant_type must be one of {_GRANTS}, not {self.grant_type!r}"
        if self.client_auth not in _AUTHS:
            yield f"client_auth must be one of {_AUTHS}, not {self.client_auth!r}"
        elif self.client_auth in _SECRET_AUTHS and not self.client_secret:
            yield "client_secret must not be empty"
        else:
            yield from assertion_problems(self.client_auth, self.assertion, self.client_secret)
        if self.encoding not in _ENCODINGS:
            yield f"encoding must be one of {_ENCODINGS}, not {self.encoding!r}"
        if self.client_auth == "basic" and self.encoding == "json":
            yield "client_auth='basic' goes with encoding='form'"
        if self.grant_type == "password" and (not self.username or not self.password):
            yield "the password grant needs username and password"
        if not 0 < self.default_lifetime <= 86400:
            yield "default_lifetime must be in (0, 86400] seconds"
        yield from url_problems("token_url", self.token_url, self.allow_insecure_http)
        yield from api_problems(self.api, self.allow_insecure_http)
        yield from self._extra_problems()

    def _extra_problems(self) -> Iterable[str]:
        # Name the entry, never its value: the value may be a credential.
        seen: set[str] = set()
        for index, (name, value) in enumerate(self.extra_headers):
            if not _HEADER_NAME.fullmatch(name):
                yield f"extra_headers entry {index}: the name is not a valid HTTP header name"
                continue
            if name.lower() in seen:
                yield f"extra_headers {name!r} is given twice"
            seen.add(name.lower())
            if name.lower() in _OWN_HEADERS or (
                name.lower() == "authorization" and self.client_auth == "basic"
            ):
                yield f"extra_headers {name!r} is a header the SDK sets itself"
            if not _HEADER_VALUE.fullmatch(reveal(value)):
                yield (
                    f"extra_headers {name!r}: the value has characters not allowed in a "
                    "header (CR, LF, other control or non-ASCII characters, or "
                    "leading/trailing spaces)"
                )
        fields: set[str] = set()
        for index, (name, _) in enumerate(self.extra_fields):
            if not name or _CONTROL.search(name):
                yield f"extra_fields entry {index}: the name is empty or has control characters"
            elif name in fields:
                yield f"extra_fields {name!r} is given twice"
            fields.add(name)

    def secrets(self) -> tuple[Secret, ...]:
        """Every credential this profile holds: to be sent, never shown."""
        key = self.assertion.key if self.assertion is not None else None
        held = (self.client_secret, self.password, self.refresh_token, key)
        extras = (v for _, v in self.extra_fields + self.extra_headers if isinstance(v, Secret))
        return tuple(s for s in (*held, *extras) if s)

    def in_scope(self, url: URL) -> bool:
        """Whether a request to *url* may carry this provider's token.

        The one scope rule (``_scope.py``), which
        :class:`~aiopay_auth.BearerAuth` applies on every request.
        """
        return _in_scope(self.api, url)


def url_problems(what: str, url: URL, allow_insecure_http: bool) -> Iterable[str]:
    """What is wrong with *url* as a token URL or an API URL (nothing: fine)."""
    # Credentials first: the other messages quote the URL.
    if url.user or url.password:
        yield f"{what} must not carry credentials in the URL"
    elif not url.is_absolute() or url.scheme not in ("https", "http") or not url.host:
        yield f"{what} must be an absolute http(s) URL, not {_shown(url):.80}"
    elif url.scheme == "http" and not (allow_insecure_http or is_loopback(url.host)):
        yield (
            f"{what} {_shown(url)} uses plain http to a non-loopback host; "
            "use https or set allow_insecure_http=True"
        )


def plain_http_proxy_problem(
    what: str, url: URL, proxy: URL | None, allow_insecure_http: bool
) -> str | None:
    """Why *url* must not be reached through *proxy* (``None``: it may).

    The plain-HTTP rule of :func:`url_problems` with the proxy in view: a
    plain ``http://`` request through a forward proxy crosses the network
    in clear text up to the proxy, whatever its target. So a plain-HTTP
    request (to loopback, the only plain HTTP allowed by default) through
    a proxy that is not on loopback is refused, unless
    *allow_insecure_http*. Only the proxy's host and port are quoted.
    """
    if proxy is None or allow_insecure_http or url.scheme != "http" or is_loopback(proxy.host):
        return None
    return (
        f"{what} {_shown(url)} would cross the network in plain http to the proxy "
        f"{proxy.host}:{proxy.port}, which is not on loopback; "
        "use https, a loopback proxy, or set allow_insecure_http=True"
    )


def api_problems(api: tuple[URL, ...], allow_insecure_http: bool) -> Iterable[str]:
    """What is wrong with *api* as the URLs a token may be sent to (nothing: fine)."""
    if not api:
        yield "api must name at least one URL the token may be sent to"
    for url in api:
        yield from url_problems("api", url, allow_insecure_http)
        if url.query_string or url.fragment:
            yield f"api URL {_shown(url)} must not have a query or fragment"


def _shown(url: URL) -> str:
    # A query string or a fragment may hold a key: never quote them.
    return str(url.with_query(None).with_fragment(None))
