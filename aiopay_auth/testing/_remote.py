"""Fake providers in a child process: their endpoints and counters come back as plain data.

A benchmark or a demo that runs its fake servers in the client's own event
loop measures them too. :class:`FakeProviderProcess` runs them in a child
process (``spawn``, optionally pinned to a core); the child sends back each
server's :class:`FakeEndpoint` once it listens, and the parent plans its
work from those (:func:`~aiopay_auth.testing.provider_for` takes one in
place of the fake). :class:`ServerCounters` are what a server counted, read
in the child on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Self

import anyio
import attrs
from yarl import URL

from ._process import STOP, ChildProcess, receive
from ._server import Dialect, FakeProvider


__all__ = ["ClientCounters", "FakeEndpoint", "FakeProviderProcess", "ServerCounters"]

_START_TIMEOUT = 30.0  # bound on starting the child's servers
_REPLY_TIMEOUT = 10.0  # bound on the child's answer to a request for counters
_COUNTERS = "counters"
_CLIENTS = "clients"
_ENDPOINTS = "endpoints"


@attrs.frozen(kw_only=True)
class FakeEndpoint:
    """Where a started :class:`~aiopay_auth.testing.FakeProvider` listens, and what it accepts.

    Plain, picklable data with the fake's URL and credential attributes, so
    that :func:`~aiopay_auth.testing.provider_for` takes it in place of the
    fake. Its ``repr`` shows no secret.

    Attributes:
        name: The name it was started under.
        dialect: The dialect it speaks.
        lifetime: Seconds each token it issues lives (when it started).
        base_url: The server's root URL.
        token_url: Its token endpoint.
        api_base: Base URL of its protected API.
        storefront_api_base: ``"oro"`` only: the storefront API; else ``None``.
        client_id: The accepted client id.
        client_secret: The accepted client secret.
        username: The accepted resource-owner username.
        password: The accepted resource-owner password.
        storefront_client_id: ``"oro"`` only: the storefront client id.
        audience: ``"payme"`` only: the required ``audience``.
    """

    name: str
    dialect: Dialect
    lifetime: float
    base_url: URL
    token_url: URL
    api_base: URL
    storefront_api_base: URL | None = None
    client_id: str
    client_secret: str = attrs.field(repr=False)
    username: str
    password: str = attrs.field(repr=False)
    storefront_client_id: str
    audience: str

    @classmethod
    def of(cls, fake: FakeProvider, name: str | None = None) -> FakeEndpoint:
        """Describe started *fake*, named *name* (its dialect by default)."""
        return cls(
            name=fake.dialect if name is None else name,
            dialect=fake.dialect,
            lifetime=fake.lifetime,
            base_url=fake.base_url,
            token_url=fake.token_url,
            api_base=fake.api_base,
            storefront_api_base=fake.storefront_api_base if fake.dialect == "oro" else None,
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            username=fake.username,
            password=fake.password,
            storefront_client_id=fake.storefront_client_id,
            audience=fake.audience,
        )


@attrs.frozen(kw_only=True)
class ServerCounters:
    """What one fake server counted (a copy of its public counters).

    Attributes:
        token_calls: Requests that reached the token endpoint.
        tokens_issued: Access tokens issued.
        api_calls: Requests that reached the protected API.
        api_unauthorized: API requests answered 401.
        api_expired: Of those, how many carried a token that had expired.
        chaos_faults: Token calls answered with a fault by
            :meth:`FakeProvider.fail_randomly
            <aiopay_auth.testing.FakeProvider.fail_randomly>`.
    """

    token_calls: int = 0
    tokens_issued: int = 0
    api_calls: int = 0
    api_unauthorized: int = 0
    api_expired: int = 0
    chaos_faults: int = 0

    @classmethod
    def of(cls, fake: FakeProvider) -> ServerCounters:
        """Read *fake*'s counters (its attributes of the same names) now."""
        return cls(**{name: getattr(fake, name) for name in _COUNTER_NAMES})

    def __sub__(self, other: ServerCounters) -> ServerCounters:
        """What was counted since *other* was read."""
        return ServerCounters(
            **{name: getattr(self, name) - getattr(other, name) for name in _COUNTER_NAMES}
        )


_COUNTER_NAMES = tuple(field.name for field in attrs.fields(ServerCounters))


@attrs.frozen(kw_only=True)
class ClientCounters:
    """What one fake server counted per client credential, and its peak of token requests.

    A copy of the fake's :attr:`~aiopay_auth.testing.FakeProvider.token_calls_by_client`,
    :attr:`~aiopay_auth.testing.FakeProvider.api_calls_by_client` and
    :attr:`~aiopay_auth.testing.FakeProvider.max_token_calls_in_flight`, for
    a worker serving many merchants (tenants) from one process.

    Attributes:
        token_calls_by_client: Token requests by the client id they named.
        api_calls_by_client: Accepted API requests by the client whose token
            they carried.
        max_token_calls_in_flight: The most token requests handled at once so far.
    """

    token_calls_by_client: Mapping[str, int] = attrs.field(factory=dict)
    api_calls_by_client: Mapping[str, int] = attrs.field(factory=dict)
    max_token_calls_in_flight: int = 0

    @classmethod
    def of(cls, fake: FakeProvider) -> ClientCounters:
        """Read *fake*'s per-client counters now."""
        return cls(
            token_calls_by_client=dict(fake.token_calls_by_client),
            api_calls_by_client=dict(fake.api_calls_by_client),
            max_token_calls_in_flight=fake.max_token_calls_in_flight,
        )


FakeFactory = Callable[[], FakeProvider]
"""Builds one unstarted fake in the child; must pickle (e.g. a ``functools.partial``)."""


def _serve(conn: Connection, servers: Mapping[str, FakeFactory], cpu: int | None) -> None:
    """The child process: serve the fakes until ``"stop"`` or the parent's end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already so since birth (ChildProcess)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            fakes = {
                name: await stack.enter_async_context(build()) for name, build in servers.items()
            }
            conn.send((_ENDPOINTS, {name: FakeEndpoint.of(f, name) for name, f in fakes.items()}))
            with contextlib.suppress(EOFError, OSError):  # the parent went away
                while (command := await receive(conn)) != STOP:
                    if command == _CLIENTS:
                        clients = {n: ClientCounters.of(f) for n, f in fakes.items()}
                        conn.send((_CLIENTS, clients))
                    else:
                        conn.send((_COUNTERS, {n: ServerCounters.of(f) for n, f in fakes.items()}))

    try:
        asyncio.run(serve())
    finally:
        conn.close()


class FakeProviderProcess:
    """Fake providers served by a child process; a context manager, plain or async.

    Example::

        servers = {"cm": functools.partial(FakeProvider, "cm", lifetime=3)}
        async with FakeProviderProcess(servers) as fakes:
            provider = provider_for(fakes.endpoints["cm"])
            ...
            print(await fakes.counters_async())

    A factory may prepare its fake before it starts, e.g. accept many
    merchants' credentials (:meth:`FakeProvider.add_client
    <aiopay_auth.testing.FakeProvider.add_client>`) that the parent chose;
    :meth:`client_counters` then reads what each merchant's client did.

    The child ignores Ctrl-C (the parent stops it in order) and exits if
    the parent goes away.

    Args:
        servers: Name to a picklable callable that builds an unstarted
            :class:`~aiopay_auth.testing.FakeProvider`, e.g.
            ``functools.partial(FakeProvider, "cm", lifetime=3)``.
        cpu: Pin the child to this CPU (Linux), or ``None``.
        name: The child process's name.

    Attributes:
        endpoints: Each server's :class:`FakeEndpoint`, by name, once started.
    """

    def __init__(
        self,
        servers: Mapping[str, FakeFactory],
        *,
        cpu: int | None = None,
        name: str = "aiopay-auth fake providers",
    ) -> None:
        self._servers = dict(servers)
        self._cpu = cpu
        self._name = name
        self._child: ChildProcess | None = None
        self.endpoints: dict[str, FakeEndpoint] = {}

    def _start(self) -> ChildProcess:
        if self._child is not None:
            msg = "FakeProviderProcess can be started only once"
            raise RuntimeError(msg)
        self._child = ChildProcess(_serve, self._servers, self._cpu, name=self._name)
        return self._child

    def _running(self) -> ChildProcess:
        if self._child is None:
            msg = "FakeProviderProcess is not started"
            raise RuntimeError(msg)
        return self._child

    @property
    def pid(self) -> int:
        """The child process's id."""
        return self._running().pid

    def __enter__(self) -> Self:
        """Start the child and wait, blocking, until every server listens."""
        child = self._start()
        try:
            self.endpoints = child.expect_blocking(_ENDPOINTS, _START_TIMEOUT)
        except BaseException:
            child.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the child, blocking."""
        self._running().close()

    async def __aenter__(self) -> Self:
        """Start the child and wait until every server listens."""
        child = self._start()
        try:
            self.endpoints = await child.expect(_ENDPOINTS, _START_TIMEOUT)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await child.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the child."""
        with anyio.CancelScope(shield=True):
            await self._running().aclose()

    def _ask(self, kind: str) -> dict[str, Any]:
        """The child's answer to *kind* (counters by server name), blocking this thread."""
        child = self._running()
        child.send(kind)
        answer: dict[str, Any] = child.expect_blocking(kind, _REPLY_TIMEOUT)
        return answer

    async def _ask_async(self, kind: str) -> dict[str, Any]:
        """The child's answer to *kind* (counters by server name)."""
        child = self._running()
        child.send(kind)
        answer: dict[str, Any] = await child.expect(kind, _REPLY_TIMEOUT)
        return answer

    def counters(self) -> dict[str, ServerCounters]:
        """Every server's counters now, by name (blocking this thread for the answer).

        Raises:
            RuntimeError: The child exited or did not answer.
        """
        return self._ask(_COUNTERS)

    async def counters_async(self) -> dict[str, ServerCounters]:
        """Every server's counters now, by name.

        Raises:
            RuntimeError: The child exited or did not answer.
        """
        return await self._ask_async(_COUNTERS)

    def client_counters(self) -> dict[str, ClientCounters]:
        """Every server's per-client counters now, by name (blocking this thread).

        Raises:
            RuntimeError: The child exited or did not answer.
        """
        return self._ask(_CLIENTS)

    async def client_counters_async(self) -> dict[str, ClientCounters]:
        """Every server's per-client counters now, by name.

        Raises:
            RuntimeError: The child exited or did not answer.
        """
        return await self._ask_async(_CLIENTS)
