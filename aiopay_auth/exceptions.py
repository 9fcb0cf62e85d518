"""Every error aiopay_auth raises, in two trees.

Run-time failures to get or use a token derive from :class:`AuthError`;
misconfiguration and misuse is :class:`ConfigError`, apart from it::

    AuthError                  getting or using a token failed at run time
    ├── TokenEndpointError     fetching a token failed
    │   ├── TokenRequestError  no usable answer: connect/read failure, timeout
    │   ├── TokenTLSError      TLS refused: untrusted CA, client certificate missing
    │   └── TokenResponseError the endpoint answered, and the answer says no
    └── TokenUnavailableError  a caller waited for a token and none came
        └── TenantRemovedError the tenant was removed while (or before) waiting

    ConfigError (a ValueError) bad configuration or call: a bug to fix, not retry
    └── TenantRequiredError    a request to a shared API named no tenant

Why two trees: a worker's ``except AuthError:`` is where it retries or
degrades, and a misconfiguration must not land there, retried forever;
``ConfigError`` is a ``ValueError`` like any bad argument. Code that wants
both catches both: ``except (AuthError, ConfigError)``.

Requests sent through aiohttp (a session from
:meth:`TokenManager.session <aiopay_auth.TokenManager.session>`, or one
with :class:`~aiopay_auth.BearerAuth` among its middlewares) raise the
token errors as aiohttp errors too: a :class:`TokenUnavailableError`
(and a :class:`TenantRemovedError`) coming out of ``session.get()`` is
also an :class:`aiohttp.ClientError`, so the usual ``except
aiohttp.ClientError`` around a request catches it, and ``except
TokenUnavailableError`` still does. Those subclasses
(:class:`aiopay_auth.ClientTokenUnavailableError`,
:class:`aiopay_auth.ClientTenantRemovedError`) are defined with the
middleware, in ``_middleware.py``, not here: this module, like everything
client-agnostic, imports no HTTP client, and an adapter for another
client defines its own. :class:`TenantRequiredError` is deliberately not
an aiohttp error: it is a programming error, and a retry loop around
requests must not swallow it. ``holder.get()`` (no aiohttp involved)
raises the plain classes.

Each error carries ``retryable``: whether asking again later can help,
and ``provider``: the name of the provider concerned, if any. No message
ever contains a secret or a token: bodies quoted from a provider are
truncated and scrubbed of anything that looks like a credential.
"""

from __future__ import annotations

import re


__all__ = [
    "AuthError",
    "ConfigError",
    "TenantRemovedError",
    "TenantRequiredError",
    "TokenEndpointError",
    "TokenRequestError",
    "TokenResponseError",
    "TokenTLSError",
    "TokenUnavailableError",
]

_QUOTE_LIMIT = 200
# Long runs of token-ish characters (JWTs, opaque tokens, secrets) in quoted
# provider text are replaced; ordinary words are far shorter than this.
_SECRETISH = re.compile(r"[A-Za-z0-9\-._~+/=]{24,}")


def scrub(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """Make provider-supplied text safe to put in an error message or a log.

    Args:
        text: Text taken from a provider's response.
        limit: The most characters kept.

    Returns:
        One line, at most *limit* characters, with long token-like runs
        replaced by ``[redacted]`` and every character that is not
        printable replaced by ``?``: C0 and C1 controls (ESC, so no
        terminal escape sequence), bidirectional and other invisible
        format characters (U+200E/F, U+202A-202E, U+2066-2069, ...) and
        lone surrogates. Runs of whitespace become one space.
    """
    flat = " ".join(text.split())
    if not flat.isprintable():
        flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    flat = _SECRETISH.sub("[redacted]", flat)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def _without_frames(error: BaseException) -> BaseException:
    """Drop the tracebacks of *error* and of everything it chains; return it.

    The one rule for an error that is kept (``holder.last_error``, a failure
    handed to waiters, a ``__cause__``): the frames it was raised through
    hold the request body and the raw answer (which may echo a secret) in
    their locals, and a renderer that shows locals would print them. The
    type, the message and the attributes stay.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return error


class _Error(Exception):
    """What both trees share: a message, the provider concerned, ``retryable``.

    Args:
        message: What went wrong, in words (never containing a secret).
        provider: The name of the provider concerned, when there is one.
        retryable: Whether asking again later can help.
    """

    retryable: bool
    provider: str | None

    def __init__(
        self, message: str, *, provider: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable

    @property
    def message(self) -> str:
        """The message without the ``[provider]`` prefix that ``str()`` adds."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"[{self.provider}] {self.message}" if self.provider else self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[_Error], args: tuple[object, ...], state: dict[str, object]) -> _Error:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class AuthError(_Error):
    """Root of the run-time errors: getting or using a token failed.

    Not the root of :class:`ConfigError` (see the module's tree).

    Args:
        message: What went wrong, in words (never containing a secret).
        provider: The name of the provider concerned, when there is one.
        retryable: Whether asking again later can help.
    """


class ConfigError(_Error, ValueError):
    """A provider profile, a policy or a call was given a value that cannot work.

    A ``ValueError``, and not an :class:`AuthError`: an ``except AuthError``
    that retries does not catch it (see the module's tree). Never
    retryable.

    Args:
        message: What is wrong, naming the field (never quoting a secret).
        provider: The name of the provider concerned, when there is one.
        retryable: Leave it ``False``: a configuration does not heal by
            waiting.
    """


class TenantRequiredError(ConfigError):
    """A request to an API that several tenants share did not say whose token to send.

    Raised by the session's middleware, before anything is sent, instead of
    guessing a credential. Choose one per request:
    ``session.get(url, middlewares=tenant.middlewares)`` (see
    :class:`~aiopay_auth.Tenants`). Never retryable: it is a programming
    error.
    """


class TokenEndpointError(AuthError):
    """Fetching a token from a provider's token endpoint failed."""


class TokenRequestError(TokenEndpointError):
    """The token endpoint could not be reached or did not answer in time.

    The message names the underlying error's type (``failed
    (ServerDisconnectedError)``) or says ``timed out``. That error is not
    chained (neither ``__cause__`` nor ``__context__``): aiohttp's messages
    may quote raw response bytes (a server echoing our request body) and
    its ``repr()`` shows the request headers (Basic credentials). Always
    retryable.

    Args:
        message: What went wrong, in words.
        provider: The provider's name.
        timed_out: Whether no answer came in time (connect or read), as
            opposed to a refused, reset or dropped connection.
    """

    timed_out: bool

    def __init__(
        self, message: str, *, provider: str | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(message, provider=provider, retryable=True)
        self.timed_out = timed_out


class TokenTLSError(TokenEndpointError):
    """TLS with the token endpoint failed: a configuration problem, not an outage.

    The server's certificate did not verify against the trusted CAs (or its
    name did not match), or the server refused the client certificate or its
    absence (mTLS). The message names what TLS said, such as
    ``certificate verify failed: ...`` or ``tlsv13 alert certificate
    required``. The ``ssl`` error is not chained, for the reason given
    at :class:`TokenRequestError`. Never
    retryable: waiters fail at once, and the refresher asks again only at
    the slow cadence for errors that cannot heal.
    """

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, provider=provider, retryable=False)


class TokenResponseError(TokenEndpointError):
    """The token endpoint answered, but not with a usable token.

    Args:
        message: What was wrong with the answer.
        provider: The provider's name.
        status: The HTTP status of the answer; ``0`` when the answer was
            not HTTP and no status line could be read.
        error: The OAuth ``error`` code (RFC 6749 §5.2) or the provider's own
            status code, when the answer carried one.
        description: The provider's own explanation, scrubbed and truncated.
        retryable: Whether asking again later can help.
        retry_after: Seconds the provider asked us to wait (``Retry-After``).
    """

    status: int
    error: str | None
    description: str | None
    retry_after: float | None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int,
        error: str | None = None,
        description: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, retryable=retryable)
        self.status = status
        self.error = error
        self.description = description
        self.retry_after = retry_after


class TokenUnavailableError(AuthError):
    """A caller waited for a token and none could be had.

    Raised when the wait bound passed, when the provider failed in a way
    that cannot heal, or when the manager closed.

    Args:
        message: What happened, in words.
        provider: The provider's name.
        last_error: The last failure of the token endpoint, if any; also
            chained as ``__cause__``, without its traceback (its frames'
            locals held the raw answer). A :class:`ConfigError` when a
            custom token source raised one.
        retryable: Whether waiting again later can help.
    """

    last_error: AuthError | ConfigError | None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        last_error: AuthError | ConfigError | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message, provider=provider, retryable=retryable)
        self.last_error = last_error


class TenantRemovedError(TokenUnavailableError):
    """The tenant was removed: its refresher stopped and its token was dropped.

    Every request still waiting for its token, and every later one through
    its middlewares, gets this at once. Never retryable.
    """

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, provider=provider, retryable=False)
