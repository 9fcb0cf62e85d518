"""The aiohttp client middleware that stamps bearer tokens.

aiohttp calls a session's middlewares once per redirect hop, each time with
a new :class:`aiohttp.ClientRequest`, and all hops of one call run in the
caller's task, one after the other. Every hop's request is handed the same
per-call list object (``ClientRequest._traces``, made once in
``ClientSession._request``), and nothing else ties a hop to its call. So
when a call's first hop is answered with a redirect, the middleware
remembers, in a context variable, that list and the provider the hop was
stamped for; a later hop of the same call is stamped for that provider
only, never for another provider whose API the redirect lands on. A hop
answered otherwise (nearly all) costs nothing here.
"""

from __future__ import annotations

import contextvars
import weakref

from aiohttp import (
    ClientError,
    ClientHandlerType,
    ClientRequest,
    ClientResponse,
    ClientResponseError,
    MultipartWriter,
    RequestInfo,
    hdrs,
    payload,
)
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._holder import TokenHolder
from ._provider import plain_http_proxy_problem
from ._routes import Routes, SharedApi
from ._token import Token
from .exceptions import ConfigError, TenantRemovedError, TokenUnavailableError


__all__ = ["BearerAuth", "ClientTenantRemovedError", "ClientTokenUnavailableError", "SharedApi"]

AUTHORIZATION = hdrs.AUTHORIZATION
PROXY_AUTHORIZATION = hdrs.PROXY_AUTHORIZATION

# The last call of this task answered with a redirect: its per-call object
# and the holder its hop was stamped for (None: not stamped), weakly: a
# context outlives its task's last call (timer handles keep it), a removed
# tenant must not. Set only on a 3xx answer (see mark_redirect).
_CALL: contextvars.ContextVar[tuple[object, weakref.ref[TokenHolder] | None] | None] = (
    contextvars.ContextVar("aiopay_auth_call", default=None)
)


def mark_redirect(request: ClientRequest, holder: TokenHolder | None) -> None:
    """Note that *request*'s answer is a redirect: its next hop may carry *holder*'s token only.

    Called only on a 3xx answer (aiohttp follows 301, 302, 303, 307 and
    308), once the hop is over: every other request pays nothing, and a
    request some inner middleware sends in the meantime cannot overwrite it.
    """
    call = getattr(request, "_traces", None)
    if call is None:
        return
    previous = _CALL.get()
    if previous is not None and previous[0] is call:
        return  # a later hop: the call stays bound to what its first hop was stamped for
    _CALL.set((call, None if holder is None else weakref.ref(holder)))


class ClientTokenUnavailableError(TokenUnavailableError, ClientError):
    """No token for a request sent through aiohttp: also an :class:`aiohttp.ClientError`.

    :class:`BearerAuth` raises it when the request waited for its token
    and none came (the wait bound passed, the provider failed in a way
    that cannot heal, the manager closed), in place of the holder's
    :class:`~aiopay_auth.exceptions.TokenUnavailableError`, with the same
    message, ``provider``, ``retryable``, ``last_error`` and
    ``__cause__``. So both the usual ``except aiohttp.ClientError`` around
    a request and ``except TokenUnavailableError`` (or ``AuthError``)
    catch it. It lives here, with the aiohttp middleware, so that
    :mod:`aiopay_auth.exceptions` imports no HTTP client.
    """


class ClientTenantRemovedError(TenantRemovedError, ClientTokenUnavailableError):
    """A request through aiohttp for a removed tenant: also an :class:`aiohttp.ClientError`.

    The :class:`~aiopay_auth.exceptions.TenantRemovedError` that a removed
    tenant's requests get, as :class:`ClientTokenUnavailableError` is the
    holder's :class:`~aiopay_auth.exceptions.TokenUnavailableError`.
    """


def _client_error(err: TokenUnavailableError) -> ClientTokenUnavailableError:
    """*err* as its aiohttp-catchable class: the same message, attributes and cause."""
    if isinstance(err, ClientTokenUnavailableError):
        return err
    cls = (
        ClientTenantRemovedError
        if isinstance(err, TenantRemovedError)
        else ClientTokenUnavailableError
    )
    client = cls.__new__(cls)
    Exception.__init__(client, *err.args)
    client.__dict__.update(err.__dict__)
    client.__cause__ = err.__cause__
    return client


def forget_sent(request: ClientRequest, *, stamped: bool) -> None:
    """Take the credentials off *request* once it is sent: the one rule for what the SDK scrubs.

    Our token (when *stamped*) and the proxy's credentials
    (``Proxy-Authorization``, which aiohttp adds to a plain-HTTP request
    sent through a proxy) are removed from its headers, so its answer's
    ``request_info`` (a live view of these headers, shown by ``repr()``
    of ``raise_for_status``'s :class:`aiohttp.ClientResponseError`) holds
    neither. A caller's own ``Authorization`` stays. aiohttp builds each
    redirect hop, and each connection's proxy header, anew.
    """
    headers = request.headers
    if stamped:
        headers.popall(AUTHORIZATION, None)
    if request.proxy is not None:  # aiohttp adds the header only with a proxy
        headers.popall(PROXY_AUTHORIZATION, None)


def forget_in_error(error: ClientResponseError) -> None:
    """:func:`forget_sent` for an error raised while sending.

    A proxy refusing ``CONNECT`` (407, 502) raises
    :class:`aiohttp.ClientHttpProxyError`, whose ``request_info`` shows
    the ``CONNECT`` request's headers, with the proxy's credentials: it
    is replaced by one without them (also in the error's ``args``).
    """
    info = error.request_info
    if PROXY_AUTHORIZATION not in info.headers:
        return
    headers = CIMultiDict(info.headers)
    headers.popall(PROXY_AUTHORIZATION)
    info = RequestInfo(info.url, info.method, CIMultiDictProxy(headers), info.real_url)
    error.request_info = info
    error.args = (info, error.history)


def drop_netrc(request: ClientRequest) -> None:
    """Remove the ``Authorization`` that aiohttp took from ``~/.netrc`` for *request*.

    A session with ``trust_env=True`` adds the ``.netrc`` entry of the
    request's host (or its ``default`` entry) as Basic credentials when
    the request has no ``auth`` of its own; for a provider's API the
    bearer token is the authentication, so those credentials are dropped
    and the token stamped. Basic credentials equal to that entry are
    taken for it, even when given as ``auth=``. Read only for an in-scope
    request that carries an ``Authorization`` on such a session.
    """
    session = request.session
    if not session.trust_env or request.url.host is None:
        return
    try:
        netrc_auth = basicauth_from_netrc(netrc_from_env(), request.url.host).encode()
    except LookupError:
        return
    headers = request.headers
    sent = headers.getall(AUTHORIZATION, ())
    kept = [value for value in sent if value != netrc_auth]
    if len(kept) != len(sent):
        del headers[AUTHORIZATION]
        for value in kept:
            headers.add(AUTHORIZATION, value)


def checked_route(request: ClientRequest, holder: TokenHolder) -> TokenHolder:
    """*holder*, unless *request* would carry its token in plain HTTP through a remote proxy.

    Raises:
        ConfigError: The request is plain HTTP and goes through a proxy
            (the session's, the environment's or its own ``proxy=``) not
            on loopback, and the provider did not set
            ``allow_insecure_http``.
    """
    proxy = request.proxy
    if proxy is not None and request.url.scheme == "http":
        provider = holder.provider
        problem = plain_http_proxy_problem("api", request.url, proxy, provider.allow_insecure_http)
        if problem is not None:
            raise ConfigError(problem, provider=holder.name)
    return holder


async def next_token(holder: TokenHolder) -> Token:
    """Wait for *holder*'s next usable token; no token is an aiohttp error too."""
    try:
        return await holder.get()
    except TokenUnavailableError as err:
        failure = _client_error(err)
    # Raised outside the except block: the holder's error is not the
    # context, only the same error told again.
    raise failure


def replayable(request: ClientRequest) -> bool:
    """Whether *request* is known to be sendable again, identical, after a 401.

    An allow-list: no body, a :class:`~aiohttp.BytesPayload` (bytes, str,
    ``json=``, url-encoded form data), a file object payload
    (:class:`~aiohttp.payload.IOBasePayload`) that is seekable and not
    ``consumed``, and a multipart body whose every part is replayable by
    this same rule. Anything else (a custom payload, an async iterable, a
    stream reader, ``aiohttp.streamer``, an unknown type) is not. A request
    sent with ``Expect: 100-continue`` is never resent either: aiohttp
    does not wait for a second ``100 Continue`` on a resend.
    """
    if request.headers.get(hdrs.EXPECT, "").strip().lower() == "100-continue":
        return False
    return _replayable_body(request.body)


def _replayable_body(body: object) -> bool:
    """The body rule of :func:`replayable`, recursive over multipart parts."""
    if body is None or isinstance(body, (bytes, bytearray)):
        return True  # no body
    if isinstance(body, payload.BytesPayload):
        return True
    if isinstance(body, payload.IOBasePayload):
        if body.consumed:
            return False
        seekable = getattr(body._value, "seekable", None)  # aiohttp: no public accessor
        try:
            return callable(seekable) and bool(seekable())
        except (OSError, ValueError):
            return False
    if isinstance(body, MultipartWriter):
        return not body.consumed and all(_replayable_body(part) for part, _, _ in body)
    return False


class BearerAuth:
    """aiohttp client middleware: ``Authorization: Bearer …`` for providers' APIs.

    On every request (aiohttp calls middlewares once per redirect hop) it
    finds the provider whose API the URL belongs to: same origin, and a
    path under that API's prefix (the longest prefix wins). It stamps that
    provider's current token, read from its holder without a lock or an
    await; only when no usable token exists does it wait for the
    refresher's fetch. A URL outside every API gets no token, and a token
    of ours sent there by hand is stripped.

    A redirect hop is stamped only for the provider the call's first hop
    was stamped for: a redirect from one provider's API to another's
    carries neither token (nor, when the first hop was not stamped, any).

    An ``Authorization`` header the caller set (``headers=``, ``auth=``,
    a session default) on an in-scope request is respected: sent untouched,
    with no 401 recovery. Only one of our own recent tokens (any letter
    case of ``Bearer``) set by hand for another provider's API is
    stripped and replaced.

    A 401 from an API invalidates the token it was sent with (only the
    first 401 per token wakes the refresher), waits for the next token and
    resends the request once. A second 401 is returned to the caller. The
    resend happens only if the body is known to be replayable (see
    ``replayable()`` in this module): any other request (a stream, a custom payload,
    ``Expect: 100-continue``) gets the 401 itself, never a resend with a
    missing body; the token is still invalidated, so the next request
    carries a fresh one. When the API refuses fresh tokens too,
    the holder backs off (see :meth:`TokenHolder.invalidate
    <aiopay_auth.TokenHolder.invalidate>`) and 401s go to callers with no
    resend and no new token until the backoff ends. Answers other than
    401 cost nothing extra: the streak is kept on tokens, not answers.

    Once the answer is in, the token and the proxy's credentials are
    removed from the request's headers, so ``response.request_info`` (and
    the :class:`aiohttp.ClientResponseError` of ``raise_for_status``)
    never shows them; nor does the ``request_info`` of an
    :class:`aiohttp.ClientHttpProxyError` (a proxy refusing ``CONNECT``).

    With a session that trusts the environment (``trust_env=True``), the
    Basic credentials aiohttp takes from ``~/.netrc`` for an in-scope
    request are dropped and the token stamped: the token authenticates
    there. Out of scope, ``.netrc`` applies as aiohttp has it.

    A plain-HTTP request in scope (allowed to loopback only) that goes
    through a proxy not on loopback raises
    :class:`~aiopay_auth.exceptions.ConfigError` before anything is sent,
    unless the provider set ``allow_insecure_http``.

    One middleware serves any number of providers, so a session that talks
    to several APIs pays for one scope lookup per request. Get one from
    :meth:`TokenManager.middleware <aiopay_auth.TokenManager.middleware>`.

    Given a :class:`~aiopay_auth.Tenants` (an API many credentials share),
    it claims that API's URLs but stamps nothing there: a request to it
    must choose its tenant (``middlewares=tenant.middlewares``), and one
    that did not raises :class:`~aiopay_auth.exceptions.TenantRequiredError`
    before anything is sent.

    Args:
        holders: The providers' token holders, and any shared APIs.

    Raises:
        ConfigError: No holder, or two providers claim the same API URL.
    """

    __slots__ = ("_find", "_routes")

    def __init__(self, *holders: TokenHolder | SharedApi) -> None:
        self._routes = Routes("BearerAuth", *holders)
        self._find = self._routes.finder()

    @property
    def holders(self) -> tuple[TokenHolder, ...]:
        """The holders whose tokens this middleware stamps."""
        return self._routes.holders

    def holder_for(self, url: URL) -> TokenHolder | None:
        """The holder whose token a request to *url* carries, if any (see :class:`Routes`)."""
        return self._routes.holder_for(url)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Stamp *request* if it is in scope, send it, and recover from one 401.

        Raises:
            ClientTokenUnavailableError: The request waited for a token and
                none came (:class:`ClientTenantRemovedError`: its tenant was
                removed); an :class:`aiohttp.ClientError` too.
            TenantRequiredError: A request to a shared API chose no tenant
                (a :class:`~aiopay_auth.exceptions.ConfigError`, not an
                aiohttp error).
            ConfigError: The token would travel in plain HTTP through a
                proxy not on loopback (from the environment, say), and
                the provider did not set ``allow_insecure_http``.
        """
        # FairPool.__call__ runs this same body inline (one coroutine less).
        holder = self._hop(request)
        try:
            if holder is None:
                response = await handler(request)
            else:
                token = holder.current
                if token is None or token.expires_at <= holder.clock():
                    token = await next_token(holder)
                request.headers[AUTHORIZATION] = token.header
                response = await handler(request)
                if response.status == 401:
                    response = await self._recover(request, handler, holder, token, response)
        except ClientResponseError as error:
            forget_in_error(error)
            raise
        finally:
            # Sent: the answer's request_info no longer holds the token,
            # nor the proxy's credentials.
            forget_sent(request, stamped=holder is not None)
        if 300 <= response.status < 400:
            mark_redirect(request, holder)
        return response

    def _hop(self, request: ClientRequest) -> TokenHolder | None:
        """Which holder's token this hop carries; no await, so no admission is lost.

        Returns the holder to stamp; or ``None``: send the request as it
        now is, no 401 recovery (any token of ours set by hand was
        stripped here; the caller's own ``Authorization`` is left as it is).

        Raises:
            TenantRequiredError: A request to a shared API chose no tenant.
            ConfigError: The token would travel in plain HTTP through a
                proxy not on loopback (see :func:`checked_route`).
        """
        holder = self._find(request.url)
        call = getattr(request, "_traces", None)
        if call is not None:
            previous = _CALL.get()
            if previous is not None and previous[0] is call:
                # A redirect hop: only the provider the call was stamped for.
                stamped = None if previous[1] is None else previous[1]()
                if stamped is None or holder is not stamped:
                    self._strip(request)
                    return None
                return checked_route(request, stamped)
        if holder is None:
            self._strip(request)
            return None
        if AUTHORIZATION in request.headers:
            drop_netrc(request)  # the bearer token authenticates here
            self._strip(request, keep=holder if isinstance(holder, TokenHolder) else None)
            if AUTHORIZATION in request.headers:
                return None  # the caller's own header: sent untouched
        if not isinstance(holder, TokenHolder):
            # A shared API and no tenant chosen: an error, never a guess.
            raise holder.no_tenant(request.url)
        return checked_route(request, holder)

    async def _recover(
        self,
        request: ClientRequest,
        handler: ClientHandlerType,
        holder: TokenHolder,
        token: Token,
        response: ClientResponse,
    ) -> ClientResponse:
        """Answer a 401: resend once with a new token when that can help."""
        if not holder.resend_after_401(token, replayable=replayable(request)):
            return response
        response.release()
        token = await next_token(holder)
        request.headers[AUTHORIZATION] = token.header
        response = await handler(request)
        if response.status == 401:
            holder.invalidate(token)  # a fresh token refused too
        return response

    def _strip(self, request: ClientRequest, keep: TokenHolder | None = None) -> None:
        """Remove every recent token of ours (other than *keep*'s) set by hand on *request*.

        Each ``Authorization`` field is looked at. The scheme is matched
        case-insensitively (RFC 9110 §11.1) and any whitespace around and
        between the parts is ignored; other credentials are left alone.
        """
        headers = request.headers
        sent = headers.getall(AUTHORIZATION, ())
        if not sent:
            return
        kept = [value for value in sent if not self._routes.ours(value, keep)]
        if len(kept) != len(sent):
            del headers[AUTHORIZATION]
            for value in kept:
                headers.add(AUTHORIZATION, value)
