"""The token manager: what users hold."""

from __future__ import annotations

import asyncio
import random
import time
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
from anyio.abc import TaskGroup
from yarl import URL

from ._check import callable_or_none, count, instance_of, number
from ._fetch import HttpTokenSource, check_token_proxy
from ._holder import TokenHolder
from ._limit import FetchLimit
from ._log import log
from ._middleware import BearerAuth
from ._network import Network, checked_network
from ._policy import RefreshPolicy
from ._pool import FairPool
from ._provider import Provider, _scopes, api_problems, plain_http_proxy_problem
from ._refresh import Refresher
from ._schedule import REFRESH_SPREAD
from ._source import TokenSource
from ._step import FetchStep
from ._tenant_holder import TenantHolder, TenantWriter
from ._tenants import Tenants, TenantSource
from ._token import Token
from ._writer import HolderWriter
from .exceptions import ConfigError


__all__ = ["TokenManager"]


class TokenManager:
    """Keeps every provider's token fresh; hands out middlewares and sessions.

    Use it as an async context manager. Inside, :meth:`add` starts one
    background refresher per provider (all in one anyio task group), and
    :meth:`session` or :meth:`middleware` put the tokens on requests.
    Leaving the block stops the refreshers, closes the token-endpoint
    session and every session :meth:`session` made, and fails anyone still
    waiting for a token; nothing is left running, also when the block is
    left by cancellation, also while entering. Once closed, it hands out
    nothing more: :meth:`add`, :meth:`session` and :meth:`middleware` raise
    :class:`~aiopay_auth.exceptions.ConfigError`.

    ::

        async with TokenManager() as tokens:
            pay = tokens.add(cm.provider(client_id=..., client_secret=...))
            async with tokens.session(pay) as http:
                async with http.post(cm.API_BASE + "/...", json=order) as resp:
                    ...

    Token requests travel on a session of their own, with its own
    connection pool and no middlewares, so a request fan that saturates the
    API pool can never delay a refresh, and no token call is ever stamped.
    Its proxy, TLS setup and connect/read bounds come from *network*.

    Args:
        policy: Refresh, backoff and timeout rules for every provider.
        clock: The monotonic clock (inject one for exact tests).
        rng: Jitter source (inject a seeded one for exact tests).
        token_pool_size: Connections of the token-endpoint pool.
        token_source: Wrap each provider's token source: called with the
            provider's holder (read-only: its ``provider``, which a
            tenant's rotation changes, its ``latest`` token and its
            ``clock``) and the default source (which fetches over HTTP),
            and returns the source to use. The seam for a shared token
            store such as :meth:`aiopay_auth.fleet.RedisFleet.wrap`; a
            source with a ``store`` attribute shows it in
            ``health().store``, and a wrapper forwards its inner
            source's (see :func:`~aiopay_auth._source.store_of`).
        network: How token requests reach the token endpoints: proxy,
            ``trust_env``, an :class:`ssl.SSLContext` (private CA, client
            certificate for mTLS), connect and read bounds (within
            ``policy.fetch_timeout``). Default: direct, system CAs.
            :meth:`add` can give one provider its own.
    """

    def __init__(
        self,
        *,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        token_pool_size: int = 10,
        token_source: Callable[[TokenHolder, TokenSource], TokenSource] | None = None,
        network: Network | None = None,
    ) -> None:
        network = checked_network(network)
        if policy is not None:
            instance_of("TokenManager policy", policy, RefreshPolicy)
        if rng is not None:
            instance_of("TokenManager rng", rng, random.Random)
        self.policy = policy or RefreshPolicy()
        callable_or_none("TokenManager clock", clock)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._token_pool_size = count("TokenManager token_pool_size", token_pool_size, minimum=0)
        callable_or_none("TokenManager token_source", token_source)
        self._wrap_source = token_source
        # Each provider's holder, through its writer half (which closes it).
        self._writers: dict[str, HolderWriter] = {}
        self._tenants: dict[str, Tenants] = {}
        self._sessions: list[aiohttp.ClientSession] = []
        self._network = network or Network()
        self._token_session: aiohttp.ClientSession | None = None
        # Sessions for providers added with a network of their own.
        self._token_sessions: dict[Network, aiohttp.ClientSession] = {}
        self._task_group: TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._runner is not None or self._closed:
            msg = "a TokenManager can be entered only once"
            raise ConfigError(msg)
        self._token_session = self._new_token_session(self._network)
        started = anyio.Event()
        self._runner = asyncio.get_running_loop().create_task(
            self._run(started), name="aiopay_auth runner"
        )
        try:
            await started.wait()
        except BaseException:
            # Cancelled while entering: __aexit__ will not run, so clean up here.
            await self.aclose()
            raise
        return self

    def _new_token_session(self, network: Network) -> aiohttp.ClientSession:
        # trust_env=False: with Network(trust_env=True), HttpTokenSource reads
        # each request's proxy from the environment itself, so that aiohttp
        # never adds ~/.netrc's credentials to a token request.
        return network.client_session(
            limit=self._token_pool_size, middlewares=(), raise_for_status=False, trust_env=False
        )

    async def _run(self, started: anyio.Event) -> None:
        # The refreshers live in their own task, so an exception or a
        # cancellation in the user's code never lands inside their group.
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            started.set()
            await anyio.sleep_forever()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop everything; idempotent. ``async with`` calls it for you."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            runner = self._runner
            if runner is not None:
                runner.cancel()
                await asyncio.wait([runner])
            for writer in self._writers.values():
                writer.close()
            for tenants in self._tenants.values():
                tenants._close()
            for session in self._sessions:
                await session.close()
            if self._token_session is not None:
                await self._token_session.close()
            for token_session in self._token_sessions.values():
                await token_session.close()
            log.debug("aiopay_auth.manager_closed", providers=len(self._writers))

    # --- providers --------------------------------------------------------

    def add(self, provider: Provider, *, network: Network | None = None) -> TokenHolder:
        """Start keeping *provider*'s token fresh.

        Returns at once: the first token is fetched in the background, and
        the first requests wait for it (all of them share that one fetch).
        ``await`` :meth:`TokenHolder.get <aiopay_auth.TokenHolder.get>` on
        the result to wait for it yourself.

        Args:
            provider: The provider profile (see :mod:`aiopay_auth.providers`).
            network: This provider's own way to its token endpoint (another
                proxy, its own client certificate), instead of the
                manager's *network*; providers given equal ones share a
                session.

        Returns:
            The provider's token holder: pass it to :meth:`middleware` or
            :meth:`session`, read its ``health()``.

        Raises:
            ConfigError: The manager is not open, or a provider of that
                name was already added.
        """
        instance_of("add() provider", provider, Provider)
        tg, _ = self._open("add providers", provider=provider.name)
        self._check_name(provider.name)
        network = checked_network(network, provider=provider.name)
        holder = self._new_holder(provider)
        source = self._wrapped(holder, self._http(network)(provider))
        writer = HolderWriter(holder, source)
        # Its jitter comes from a generator of its own seeded from the manager's.
        rng = random.Random(self._rng.random())  # noqa: S311 - jitter, not cryptography
        refresher = Refresher(writer, source, self.policy, rng=rng)
        self._writers[provider.name] = writer
        tg.start_soon(refresher.run, name=f"aiopay_auth refresher {provider.name}")
        log.debug("aiopay_auth.provider_added", provider=provider.name)
        return holder

    def add_tenants(
        self,
        name: str,
        *,
        api: str | URL | Iterable[str | URL],
        max_concurrent_fetches: int = 4,
        fetches_per_second: float = 10.0,
        idle_after: float | None = 3600.0,
        network: Network | None = None,
    ) -> Tenants:
        """Start a set of tenants: many credentials for one provider API.

        Add each credential with :meth:`Tenants.add
        <aiopay_auth.Tenants.add>`, pass the set to :meth:`session` (one
        pooled, fair session for all of them), and choose the tenant on
        each request with ``middlewares=tenant.middlewares``::

            merchants = tokens.add_tenants("cm", api=cm.API_BASE)
            m42 = merchants.add("m-42", cm.provider(client_id=..., client_secret=...))
            async with tokens.session(merchants) as http:
                async with http.post(url, json=order, middlewares=m42.middlewares) as resp:
                    ...

        Args:
            name: The set's name (logs, errors, health); tenants' holders
                are named ``"<name>/<key>"``.
            api: The API the tenants share: each tenant's provider must
                cover exactly these URLs.
            max_concurrent_fetches: The most token requests of the whole
                set in flight at once (default 4).
            fetches_per_second: The most token requests of the whole set
                started in any second (default 10; starts are spaced
                ``1 / fetches_per_second`` apart). A cold start of *N*
                tenants takes about ``N / fetches_per_second`` seconds:
                raise it to what your provider allows. Refresh points are
                spread besides: each tenant's is drawn uniformly in the
                last half of its refresh delay *D*, so about ``2 / D`` of
                the set refreshes in any one second (one-hour tokens: under
                0.2 % in the busiest second of 10,000 tenants started
                together).
            idle_after: Seconds without a request after which a tenant
                rests (default one hour; ``None``: never): at its next
                refresh point its token is dropped and it is refreshed no
                more, shown ``"idle"`` in ``health()``. Its next request
                waits for one token request (all its waiters share it)
                and refreshing resumes.
            network: The tenants' own way to the token endpoint, instead of
                the manager's *network*.

        Returns:
            The (empty) set.

        Raises:
            ConfigError: The manager is not open, the name is taken, or an
                argument cannot work.
        """
        instance_of("add_tenants() name", name, str)
        tg, _ = self._open("add tenants", provider=name)
        if not name:
            msg = "add_tenants() name must not be empty"
            raise ConfigError(msg)
        self._check_name(name)
        limit = FetchLimit(max_concurrent_fetches, fetches_per_second)
        if idle_after is not None:
            number("add_tenants() idle_after", idle_after)
        network = checked_network(network, provider=name)
        rng = random.Random(self._rng.random())  # noqa: S311 - jitter, not cryptography
        scopes = _scopes(api)
        # The tenants' own profiles are checked against the insecure-http rule.
        if problems := list(api_problems(scopes, allow_insecure_http=True)):
            msg = f"add_tenants() {name!r}: " + "; ".join(problems)
            raise ConfigError(msg, provider=name)
        tenants = Tenants(
            self, name, scopes, limit, network=network, rng=rng, idle_after=idle_after
        )
        self._tenants[name] = tenants
        tg.start_soon(tenants._schedule.run, name=f"aiopay_auth refresher {name}")
        log.debug("aiopay_auth.tenants_added", provider=name)
        return tenants

    def _check_name(self, name: str) -> None:
        if name in self._writers or name in self._tenants:
            msg = f"a provider named {name!r} was already added"
            raise ConfigError(msg, provider=name)

    def _http(self, network: Network | None) -> Callable[[Provider], TokenSource]:
        """Builds a profile's HTTP token source, on the token session for *network*."""
        _, session = self._open("add providers")
        if network is not None and network != self._network:
            if network not in self._token_sessions:
                self._token_sessions[network] = self._new_token_session(network)
            session = self._token_sessions[network]

        def http(profile: Provider) -> TokenSource:
            return HttpTokenSource(
                profile,
                session,
                timeout=self.policy.fetch_timeout,
                clock=self._clock,
                network=network or self._network,
            )

        return http

    def _new_holder(self, provider: Provider) -> TokenHolder:
        return TokenHolder(
            provider, clock=self._clock, wait_timeout=self.policy.wait_timeout, policy=self.policy
        )

    def _wrapped(self, holder: TokenHolder, source: TokenSource) -> TokenSource:
        """*source* as the ``token_source`` wrapper makes it, if there is one."""
        if self._wrap_source is not None:
            return self._wrap_source(holder, source)
        return source

    def _tenant_step(self, provider: Provider, tenants: Tenants) -> tuple[TenantWriter, FetchStep]:
        """A tenant's holder (its writer half), its token requests under the limit, its rules.

        The set's schedule drives the step: no task of its own. Its jitter
        comes from the set's generator (2.5 KiB a tenant otherwise).
        """
        self._open("add tenants", provider=provider.name)
        # Its token source is built per request: the proxy is checked here, once.
        check_token_proxy(provider, (tenants.network or self._network).proxy)
        holder = TenantHolder(
            provider, clock=self._clock, wait_timeout=self.policy.wait_timeout, policy=self.policy
        )
        if tenants._http is None:  # one for the whole set
            tenants._http = self._http(tenants.network)
        source = self._wrapped(holder, TenantSource(holder, tenants._http, tenants.limit))
        writer = TenantWriter(holder, source)
        step = FetchStep(writer, source, self.policy, tenants._rng, spread=REFRESH_SPREAD)
        return writer, step

    def holders(self) -> tuple[TokenHolder, ...]:
        """Every provider's holder, in the order they were added."""
        return tuple(writer.holder for writer in self._writers.values())

    async def token(self, holder: TokenHolder, *, timeout: float | None = None) -> Token:
        """Deprecated: use ``await holder.get(timeout)``, which this calls.

        It returns *holder*'s usable token, waiting for it when there is
        none. It warns (:class:`DeprecationWarning`) and goes in 0.3.

        Raises:
            ConfigError: *holder* is not one of this manager's holders, or
                *timeout* is not a number of seconds.
            TokenUnavailableError: As :meth:`TokenHolder.get
                <aiopay_auth.TokenHolder.get>`.
        """
        warnings.warn(
            "TokenManager.token(holder) is deprecated: use await holder.get(timeout)",
            DeprecationWarning,
            stacklevel=2,
        )
        self._check_holder(holder)
        return await holder.get(timeout)

    # --- putting tokens on requests --------------------------------------

    def middleware(self, *holders: TokenHolder | Tenants) -> BearerAuth:
        """An aiohttp client middleware stamping these providers' tokens on their APIs.

        For your own session, put a :class:`~aiopay_auth.FairPool` first
        so that requests are stamped only once the pool can take them::

            aiohttp.ClientSession(middlewares=[FairPool(), tokens.middleware(pay)])

        Args:
            holders: One or more holders from :meth:`add`; each token goes
                only to its own provider's API. A :class:`Tenants` set
                claims its API: a request there must choose its tenant
                (``middlewares=tenant.middlewares``), else it raises
                :class:`~aiopay_auth.exceptions.TenantRequiredError`.

        Returns:
            The middleware.

        Raises:
            ConfigError: The manager is closed, or a holder is not its own.
        """
        self._open("use middleware()")
        for holder in holders:
            self._check_holder(holder)
        return BearerAuth(*holders)

    def session(
        self,
        *holders: TokenHolder | Tenants,
        limit: int = 100,
        limit_per_host: int = 0,
        network: Network | None = None,
        **session_kwargs: Any,
    ) -> aiohttp.ClientSession:
        """A pooled aiohttp session that stamps the given providers' tokens.

        The session has one middleware: a :class:`~aiopay_auth.FairPool`
        in front of a pool of *limit* connections (and *limit_per_host*
        to each host, when set), running one :class:`~aiopay_auth.BearerAuth` for all the holders
        inside each admission. Use it as
        ``async with tokens.session(pay) as http:``; the manager also
        closes it on exit.

        Args:
            holders: The providers whose tokens to stamp (each only on its
                own API), and :class:`Tenants` sets, whose requests choose
                their tenant with ``middlewares=tenant.middlewares``.
            limit: Connections in the pool: the most requests in flight.
            limit_per_host: The most connections to one host (0: no
                per-host limit); the pool then admits each host's requests
                first come, first served too.
            network: How the API is reached: proxy, ``trust_env``, an
                :class:`ssl.SSLContext` (a private CA; the client
                certificate a certificate-bound token needs), connect and
                read bounds (under aiohttp's default total of 5 minutes).
                Default: direct, system CAs.
            session_kwargs: Passed to :class:`aiohttp.ClientSession`
                (``timeout``, ``headers``, ``raise_for_status``, …); not
                ``connector`` or ``middlewares``; with *network*, not
                ``proxy``, ``proxy_auth`` or ``trust_env`` (nor ``timeout``
                when *network* sets a bound).

        Returns:
            The session.

        Raises:
            ConfigError: The manager is closed, or the arguments cannot work
                (such as a plain-HTTP API through a proxy not on loopback).
        """
        self._open("use session()")
        if "connector" in session_kwargs or "middlewares" in session_kwargs:
            msg = "session() builds its own connector and middlewares"
            raise ConfigError(msg)
        count("session() limit", limit, minimum=1)
        count("session() limit_per_host", limit_per_host, minimum=0)
        if "timeout" in session_kwargs:
            instance_of("session() timeout", session_kwargs["timeout"], aiohttp.ClientTimeout)
        network = checked_network(network)
        if network is not None:
            session_kwargs = _with_network(network, session_kwargs)
            _check_api_proxy(holders, network.proxy)
        # One middleware layer: admission, then stamping, in one call.
        pool = FairPool(self.middleware(*holders) if holders else None)
        session = (network or Network()).client_session(
            limit=limit, limit_per_host=limit_per_host, middlewares=(pool,), **session_kwargs
        )
        self._sessions = [s for s in self._sessions if not s.closed]
        self._sessions.append(session)
        return session

    def _open(
        self, what: str, *, provider: str | None = None
    ) -> tuple[TaskGroup, aiohttp.ClientSession]:
        tg, session = self._task_group, self._token_session
        if self._closed:
            msg = f"cannot {what}: this TokenManager is closed"
            raise ConfigError(msg, provider=provider)
        if tg is None or session is None:
            msg = f"{what} inside 'async with TokenManager()'"
            raise ConfigError(msg, provider=provider)
        return tg, session

    def _check_holder(self, holder: TokenHolder | Tenants) -> None:
        instance_of("a holder", holder, (TokenHolder, Tenants))
        if isinstance(holder, Tenants):
            if self._tenants.get(holder.name) is not holder:
                msg = f"tenants {holder.name!r} were not added to this manager"
                raise ConfigError(msg, provider=holder.name)
        elif (writer := self._writers.get(holder.name)) is None or writer.holder is not holder:
            msg = f"provider {holder.name!r} was not added to this manager"
            raise ConfigError(msg, provider=holder.name)


def _check_api_proxy(holders: Iterable[TokenHolder | Tenants], proxy: URL | None) -> None:
    """Refuse a plain-HTTP API of *holders* reached through *proxy* when it is not on loopback.

    A request that gets such a proxy some other way (the environment, a
    per-request ``proxy=``) is refused by the middleware, when it is sent.
    """
    for holder in holders:
        if not isinstance(holder, TokenHolder):
            continue  # a Tenants set: each tenant's requests are checked when sent
        provider = holder.provider
        for url in provider.api:
            problem = plain_http_proxy_problem("api", url, proxy, provider.allow_insecure_http)
            if problem is not None:
                raise ConfigError(f"session(): {problem}", provider=provider.name)


def _with_network(network: Network, session_kwargs: dict[str, Any]) -> dict[str, Any]:
    """*session_kwargs* plus *network*'s options; refuses to take two answers to one question."""
    options: dict[str, Any] = {}
    taken = {"proxy", "proxy_auth", "trust_env"} | ({"timeout"} if network.has_timeouts else set())
    clash = sorted(taken & session_kwargs.keys())
    if clash:
        msg = f"session(): pass {', '.join(clash)} through network=, not as well"
        raise ConfigError(msg)
    if network.has_timeouts:
        # aiohttp's own default total (5 minutes), kept: a bare ClientTimeout()
        # has no total at all, and the session would then have no overall bound.
        options["timeout"] = network.timeout(total=aiohttp.client.DEFAULT_TIMEOUT.total)
    return {**session_kwargs, **options}
