"""How sessions reach the network: proxy, environment, TLS, timeouts.

One frozen value object, :class:`Network`, used by the token endpoint's
session (``TokenManager(network=...)``) and by API sessions
(``tokens.session(..., network=...)``), and the one rule that recognises a
TLS failure in an aiohttp error (:func:`tls_problem`). No I/O here.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.request
import warnings
from typing import Any

import aiohttp
import attrs
from yarl import URL

from ._check import number
from ._secret import Secret
from .exceptions import ConfigError, scrub


__all__ = ["Network", "checked_network", "env_proxy_problem", "tls_problem"]

# "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)"
_SSL_NOISE = re.compile(r"^\[[A-Z]+: [A-Z0-9_]+\]\s*|\s*\(_ssl\.c:\d+\)$")
_SSL_REASON = re.compile(r"^\[[A-Z]+: ([A-Z0-9_]+)\]")
# OpenSSL reason codes of a TLS set-up that cannot work as configured.
_SETUP_FAILURE = re.compile(
    r"CERTIFICATE|UNKNOWN_CA|HANDSHAKE_FAILURE|ACCESS_DENIED|PROTOCOL_VERSION|"
    r"UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|NO_SHARED_CIPHER|NO_CIPHERS_AVAILABLE|"
    r"INSUFFICIENT_SECURITY|WRONG_VERSION_NUMBER|KEY_TOO_SMALL|MD_TOO_WEAK|"
    r"NO_SUITABLE_SIGNATURE_ALGORITHM"
)


_PROXY_RULE = "must be an absolute http:// URL (host and port)"
# yarl's reasons for a URL it cannot parse, in our words: its own could
# quote the URL, and with it a password.
_UNPARSED = (
    ("Port out of range", "its port is not in 1-65535"),
    ("port can't be converted", "its port is not a number"),
    ("host is required", "it has no host"),
    ("IPv6", "its host is not a valid IPv6 address"),
)
# The environment's proxies aiohttp's trust_env reads, each parsed for any request.
_ENV_SCHEMES = ("http", "https", "ws", "wss")


def _unparsed(exc: ValueError) -> str:
    """Why a proxy URL does not parse, never quoting it."""
    text = str(exc)
    return next((reason for clue, reason in _UNPARSED if clue in text), "it is not a URL")


def _proxy_problem(proxy: URL) -> str | None:
    """What keeps *proxy* from being used as a forward proxy, never quoting it."""
    if not proxy.is_absolute() or proxy.scheme != "http" or not proxy.host:
        return _PROXY_RULE
    if not proxy.port:
        return f"{_PROXY_RULE}: its port is not in 1-65535"
    return None


def _proxy(value: str | URL | None) -> URL | None:
    if value is None or isinstance(value, URL):
        return value
    if not isinstance(value, str):  # for untyped callers
        msg = "network: proxy must be a URL string or None"  # type: ignore[unreachable]
        raise ConfigError(msg)
    try:
        return URL(value)
    except ValueError as exc:
        reason = _unparsed(exc)
    # Raised outside the except block: yarl's error is not chained.
    raise ConfigError(f"network: proxy {_PROXY_RULE}: {reason}")


def _env_name(scheme: str) -> str:
    # The variable urllib (and so aiohttp) took: the lower-case one wins.
    lower = f"{scheme}_proxy"
    return lower if lower in os.environ else lower.upper()


def env_proxy_problem(url: URL) -> str | None:
    """What is wrong with the proxy ``trust_env`` takes from the environment for *url*.

    aiohttp reads ``HTTP_PROXY``, ``HTTPS_PROXY``, ``WS_PROXY`` and
    ``WSS_PROXY`` for every request not bypassed by ``NO_PROXY``: one that
    does not parse fails the request with a bare ``ValueError``, and one
    that is not an ``http://`` host and port (no scheme, ``socks5://``)
    fails it as a connection error, retried for ever. Returns the problem,
    naming the variable and never quoting its value, or ``None`` when
    aiohttp can use what is there (``https://`` proxies it ignores, with a
    warning, as it always has).
    """
    # The functions aiohttp asks (the environment; on macOS and Windows the
    # system's settings too): like aiohttp, call this in a worker thread.
    if url.host is not None and urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    for scheme in _ENV_SCHEMES:
        value = proxies.get(scheme)
        if value is None:
            continue
        try:
            proxy = URL(value)
        except ValueError as exc:
            problem: str | None = f"{_PROXY_RULE}: {_unparsed(exc)}"
        else:
            used = scheme == url.scheme and proxy.scheme not in ("https", "wss")
            problem = _proxy_problem(proxy) if used else None
        if problem is not None:
            return f"{_env_name(scheme)} from the environment (trust_env) {problem}"
    return None


def _shown_proxy(value: URL | None) -> str:
    # The proxy URL may carry a user and password: show where it goes, nothing more.
    if value is None:
        return "None"
    if not value.is_absolute():
        return "'<not an absolute URL>'"
    return repr(f"{value.scheme}://{value.host}:{value.port}")


def _timeout_problem(name: str, value: float | None) -> str | None:
    if value is None:
        return None
    try:
        number(name, value)  # the one rule: a finite, positive int or float
    except ConfigError as exc:
        return f"{exc.message} (or None)"
    return None


@attrs.frozen(kw_only=True)
class Network:
    """How a session reaches its servers: proxy, environment, TLS, timeouts.

    Give one to :class:`~aiopay_auth.TokenManager` (``network=``) for the
    token endpoints, and to :meth:`TokenManager.session
    <aiopay_auth.TokenManager.session>` (``network=``) for an API. The two
    are separate on purpose: the token endpoint and the API may sit behind
    different proxies or want different client certificates.

    Attributes:
        proxy: An ``http://`` forward proxy URL (HTTPS goes through it with
            ``CONNECT``). It may carry ``user:password@``; they are sent as
            ``Proxy-Authorization`` and never shown: they are kept apart
            as a :class:`~aiopay_auth.Secret`, this attribute holds the URL
            without them, and ``repr()`` and errors show only the scheme,
            host and port.
        trust_env: Read ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` from
            the environment, as aiohttp's ``trust_env`` does. An explicit
            *proxy* wins over the environment. ``~/.netrc`` never
            authenticates a token request or an in-scope API request (the
            token does); it may give the proxy's credentials.
        ssl: The :class:`ssl.SSLContext` for HTTPS: a private CA
            (``load_verify_locations``), a client certificate
            (``load_cert_chain``, for mTLS). It must verify certificates
            (``CERT_REQUIRED``) and check the server's hostname
            (``check_hostname``). ``None``: the system's default trust.
        connect_timeout: Seconds to get a connection (DNS, TCP, proxy, TLS
            handshake, and any wait for a free pooled connection), or
            ``None`` for no bound of its own.
        read_timeout: Seconds the server may stay silent while an answer
            is awaited or read, or ``None`` for no bound of its own.
    """

    proxy: URL | None = attrs.field(default=None, converter=_proxy, repr=_shown_proxy)
    trust_env: bool = False
    ssl: ssl.SSLContext | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    # The proxy URL with its user and password, when it has them. Set from
    # *proxy*; an argument only so that attrs.evolve() carries it over.
    _proxy_secret: Secret | None = attrs.field(default=None, repr=False, alias="_proxy_secret")

    def __attrs_post_init__(self) -> None:
        problems = [p for p in self._problems() if p]
        if problems:
            raise ConfigError("network: " + "; ".join(problems))
        proxy, secret = self.proxy, self._proxy_secret
        if proxy is not None and (proxy.user is not None or proxy.password is not None):
            secret, proxy = Secret(str(proxy)), proxy.with_user(None)
        elif secret is not None and URL(secret.reveal()).with_user(None) != proxy:
            secret = None  # evolve() moved the proxy elsewhere: its credentials stay behind
        object.__setattr__(self, "proxy", proxy)
        object.__setattr__(self, "_proxy_secret", secret)

    def _problems(self) -> list[str | None]:
        problems: list[str | None] = []
        proxy = self.proxy
        if proxy is not None and (problem := _proxy_problem(proxy)):
            problems.append(f"proxy {problem}")
        elif proxy is not None and (
            proxy.path not in ("", "/") or proxy.query_string or proxy.fragment
        ):
            problems.append("proxy must not have a path, query or fragment")
        trust_env: object = self.trust_env
        if not isinstance(trust_env, bool):
            problems.append("trust_env must be True or False")
        context: object = self.ssl  # untyped callers pass True, False, paths
        if context is not None and not isinstance(context, ssl.SSLContext):
            problems.append("ssl must be an ssl.SSLContext or None")
        elif isinstance(context, ssl.SSLContext) and context.verify_mode != ssl.CERT_REQUIRED:
            problems.append("ssl must verify the server's certificate (verify_mode CERT_REQUIRED)")
        elif isinstance(context, ssl.SSLContext) and not context.check_hostname:
            # A certificate for any name would do: a hostname that does not
            # match must be a TokenTLSError, as with the default context.
            problems.append("ssl must check the server's hostname (check_hostname True)")
        problems.append(_timeout_problem("connect_timeout", self.connect_timeout))
        problems.append(_timeout_problem("read_timeout", self.read_timeout))
        return problems

    def client_session(
        self, *, limit: int, limit_per_host: int = 0, **options: Any
    ) -> aiohttp.ClientSession:
        """An :class:`aiohttp.ClientSession` reaching servers this way.

        Its pool holds *limit* connections (*limit_per_host* per host, 0:
        no per-host limit), with this TLS setup; the proxy, its credentials
        and ``trust_env`` are the session's defaults. *options* go to
        :class:`aiohttp.ClientSession` as they are.
        """
        connector = aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=limit_per_host,
            ssl=True if self.ssl is None else self.ssl,
        )
        try:
            return self._client_session(connector, **options)
        except (TypeError, ValueError) as exc:
            # The connector is fresh, holds no connection: closing it marks
            # the half-built session closed, so none warns of being unclosed.
            connector._close()  # the synchronous close (no connection to wait for)
            # aiohttp's own words may quote a value (a header, a proxy):
            # name the arguments and the error type only, chain nothing.
            given = ", ".join(sorted(options)) or "none"
            msg = (
                f"aiohttp.ClientSession refused an argument ({type(exc).__name__}); "
                f"arguments given: {given}"
            )
        raise ConfigError(msg)

    def _client_session(
        self, connector: aiohttp.TCPConnector, **options: Any
    ) -> aiohttp.ClientSession:
        options = {"trust_env": self.trust_env, **options}
        if self.proxy is not None:
            options["proxy"] = self.proxy  # never with its password: see below
        if self._proxy_secret is None:
            return aiohttp.ClientSession(connector=connector, **options)
        secret = URL(self._proxy_secret.reveal())
        # aiohttp quotes the proxy URL in its errors (a 407 on CONNECT), so
        # the credentials go apart, as proxy_auth: the only way a session
        # can default them. aiohttp 3.12+ deprecates it for per-request
        # proxy_headers, which a session cannot default.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            auth = aiohttp.BasicAuth(secret.user or "", secret.password or "")
            return aiohttp.ClientSession(connector=connector, proxy_auth=auth, **options)

    @property
    def has_timeouts(self) -> bool:
        """Whether a connect or read bound is set."""
        return self.connect_timeout is not None or self.read_timeout is not None

    def timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        """A :class:`aiohttp.ClientTimeout` with this object's bounds under *total*."""
        return aiohttp.ClientTimeout(
            total=total, connect=self.connect_timeout, sock_read=self.read_timeout
        )


def checked_network(value: object, *, provider: str | None = None) -> Network | None:
    """*value* when it is a :class:`Network` or ``None``; a ConfigError otherwise."""
    if value is None or isinstance(value, Network):
        return value
    msg = f"network must be an aiopay_auth.Network, not {type(value).__name__}"
    raise ConfigError(msg, provider=provider)


def tls_problem(exc: BaseException) -> str | None:
    """What TLS refused, if *exc* (or what it was raised from) is a TLS set-up failure.

    A TLS set-up failure is a configuration problem that asking again will
    not fix: the server's certificate does not verify (an untrusted CA, a
    name that does not match), a client certificate is missing or refused,
    no protocol version or cipher in common, or TLS spoken to a port that
    does not speak it. Returns OpenSSL's words for it, such as
    ``"certificate verify failed: unable to get local issuer certificate"``
    or ``"tlsv13 alert certificate required"``. Returns ``None`` for
    anything else, including TLS errors an unreliable network can cause
    (a bad record MAC, an unexpected EOF), which stay retryable.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # aiohttp's wrappers subclass the ssl errors without their details:
        # read the ssl module's own error they were raised from.
        if isinstance(current, ssl.SSLError) and not isinstance(current, aiohttp.ClientError):
            if isinstance(current, ssl.SSLCertVerificationError):
                # Set by the ssl module's C code; absent on an error made in Python.
                reason = getattr(current, "verify_message", None) or "certificate verify failed"
                return scrub(f"certificate verify failed: {reason}", 160)
            text = current.strerror or (str(current.args[1]) if len(current.args) > 1 else "")
            match = _SSL_REASON.match(text)
            code = getattr(current, "reason", None) or (match.group(1) if match else "")
            if _SETUP_FAILURE.search(code):
                return scrub(_SSL_NOISE.sub("", text) or code, 160)
        current = current.__cause__ or current.__context__
    return None
