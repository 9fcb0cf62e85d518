"""The one I/O step of a refresh: send a token request, parse the answer."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import BasicAuth, hdrs
from aiohttp.helpers import get_env_proxy_for_url
from aiohttp.http_exceptions import ContentLengthError, TransferEncodingError
from yarl import URL

from ._network import Network, env_proxy_problem, tls_problem
from ._oauth import MAX_RESPONSE_BYTES, build_token_request, parse_token_response
from ._provider import Provider, plain_http_proxy_problem
from ._secret import Secret
from ._source import TokenSource
from ._token import Token
from .exceptions import (
    ConfigError,
    TokenEndpointError,
    TokenRequestError,
    TokenResponseError,
    TokenTLSError,
)


# TokenSource is re-exported for code that imported it from here; its home
# is _source.py, which imports no HTTP client.
__all__ = ["HttpTokenSource", "TokenSource", "check_token_proxy"]


class HttpTokenSource:
    """Fetches tokens from a provider's token endpoint with aiohttp.

    Args:
        provider: The provider profile.
        session: The manager's token-endpoint session (its own pool, no
            middlewares).
        timeout: Bound on the whole request, in seconds.
        clock: The monotonic clock tokens' times are on.
        network: Its connect and read bounds apply within *timeout* (the
            proxy and TLS setup live on *session*). With ``trust_env``
            and no proxy of its own, each request's proxy is read from
            the environment here: *session* itself trusts nothing from
            the environment, so ``~/.netrc`` never adds its credentials
            to a token request. A proxy from the environment that
            cannot work is a :class:`~aiopay_auth.ConfigError` naming
            the variable, before anything is sent.

    Raises:
        ConfigError: *network*'s proxy is not on loopback and the token
            URL is plain HTTP (see :func:`plain_http_proxy_problem`).
    """

    def __init__(
        self,
        provider: Provider,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        network: Network | None = None,
    ) -> None:
        network = network or Network()
        self._provider = provider
        self._session = session
        self._timeout = network.timeout(total=timeout)
        self._clock = clock
        self._env_proxy = network.trust_env and network.proxy is None
        check_token_proxy(provider, network.proxy)

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Send one token request and parse its answer."""
        provider = self._provider
        request = build_token_request(
            provider, refresh_token=refresh_token, now=time.time(), jti=secrets.token_urlsafe(18)
        )
        issued_at = self._clock()
        origin = request.url.origin()
        sent_headers = request.headers
        options: dict[str, Any] = {}
        if self._env_proxy:
            sent_headers, options = await self._env_proxy_options(request.url, sent_headers)
        status = 0  # until a status line has been read
        failure: TokenEndpointError | None = None
        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers=sent_headers,
                timeout=self._timeout,
                allow_redirects=False,  # never carry credentials to another URL
                **options,
            ) as resp:
                status, headers = resp.status, resp.headers
                if (resp.content_length or 0) > MAX_RESPONSE_BYTES:
                    raise TokenResponseError(
                        f"token response of {resp.content_length} bytes is too large",
                        provider=provider.name,
                        status=status,
                        retryable=True,
                    )
                body = await _read_limited(resp)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure = _failure(exc, provider.name, str(origin), status)
        if failure is not None:
            # Raised outside the except block: aiohttp's error is neither the
            # cause nor the context (its message may quote raw response bytes,
            # its repr the request headers).
            raise failure
        return parse_token_response(
            provider,
            status=status,
            headers=headers,
            body=body,
            issued_at=issued_at,
            wall_now=time.time(),
            refresh_token=refresh_token,
        )

    async def _env_proxy_options(
        self, url: URL, headers: tuple[tuple[str, str], ...]
    ) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
        """*headers* and the options that send a request to *url* through the environment's proxy.

        The proxy is read (``HTTP(S)_PROXY``, ``NO_PROXY``) per request, in
        a thread, as aiohttp's own ``trust_env`` does. Its credentials
        (from its URL, or ``~/.netrc``'s entry for the proxy's host) go to
        the proxy only, as ``Proxy-Authorization``: on the ``CONNECT`` for
        HTTPS, with the request itself for plain HTTP (aiohttp sends
        ``proxy_headers`` only on a ``CONNECT``).

        Raises:
            ConfigError: The environment's proxy cannot work (see
                :func:`~aiopay_auth._network.env_proxy_problem`), or the
                token URL is plain HTTP and the proxy is not on loopback.
        """
        problem, found = await asyncio.to_thread(_env_proxy_for, url)
        if problem is not None:
            # Configuration, not an outage: never retried as one, never quoted.
            raise ConfigError(problem, provider=self._provider.name)
        if found is None:
            return headers, {}  # no proxy for this URL
        proxy, auth = found
        check_token_proxy(self._provider, proxy)
        options: dict[str, Any] = {"proxy": proxy}
        if auth is not None:
            credentials = (hdrs.PROXY_AUTHORIZATION, auth.encode())
            if url.scheme == "https":
                options["proxy_headers"] = dict([credentials])
            else:
                headers = (*headers, credentials)
        return headers, options


def _env_proxy_for(url: URL) -> tuple[str | None, tuple[URL, BasicAuth | None] | None]:
    """In a worker thread, one read of the environment: its problem, else *url*'s proxy."""
    problem = env_proxy_problem(url)
    if problem is not None:
        return problem, None
    try:
        return None, get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def check_token_proxy(provider: Provider, proxy: URL | None) -> None:
    """Refuse *provider*'s plain-HTTP token URL through *proxy* when it is not on loopback.

    Raises:
        ConfigError: See :func:`~aiopay_auth._provider.plain_http_proxy_problem`.
    """
    problem = plain_http_proxy_problem(
        "token_url", provider.token_url, proxy, provider.allow_insecure_http
    )
    if problem is not None:
        raise ConfigError(problem, provider=provider.name)


def _failure(exc: BaseException, provider: str, origin: str, status: int) -> TokenEndpointError:
    """Our typed error for aiohttp's *exc*, naming its type, never quoting it."""
    if (problem := tls_problem(exc)) is not None:
        return TokenTLSError(f"TLS with {origin} failed: {problem}", provider=provider)
    if _not_http(exc):
        # The endpoint answered, but not in HTTP: a bad response, not a lost connection.
        return TokenResponseError(
            f"token endpoint {origin} answered with malformed HTTP ({type(exc).__name__})",
            provider=provider,
            status=status,
            retryable=True,
        )
    timed_out = isinstance(exc, TimeoutError)
    what = "timed out" if timed_out else f"failed ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # The proxy refused the tunnel (407, 403, 502): only its status is quoted.
        what = f"failed ({type(exc).__name__}: the proxy answered HTTP {int(exc.status)})"
    return TokenRequestError(
        f"token request to {origin} {what}", provider=provider, timed_out=timed_out
    )


def _not_http(exc: BaseException) -> bool:
    """Whether aiohttp failed because the answer is not valid HTTP.

    A garbled status line, header or framing is a ``ClientResponseError``
    (the connection errors derive from ``ClientConnectionError`` instead);
    a body that cannot be decoded (bad gzip) is a ``ClientPayloadError``
    caused by anything but running out of data, which is a dropped
    connection (``ContentLengthError``, ``TransferEncodingError``). A
    proxy refusing ``CONNECT`` (``ClientHttpProxyError``) answered in HTTP.
    """
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return False  # a proxy refusing the tunnel answered in valid HTTP
    if isinstance(exc, aiohttp.ClientResponseError):
        return True
    if isinstance(exc, aiohttp.ClientPayloadError):
        return not isinstance(exc.__cause__, ContentLengthError | TransferEncodingError)
    return False


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16384):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            # Report the oversize; parse_token_response refuses it.
            return b"".join(chunks) + chunk
        chunks.append(chunk)
    return b"".join(chunks)
