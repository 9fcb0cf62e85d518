"""``aiopay-auth demo``: a payment-worker fan against loopback fake providers.

The demo starts a :class:`~aiopay_auth.testing.FakeProvider` for each
dialect (CM.com, Vonage, Pay-me, Oro; Oro with a back-office and a
storefront provider, so five providers on four servers) with tokens that
live a few seconds, adds the five providers to one
:class:`~aiopay_auth.TokenManager`, and runs *concurrency* workers that
send payment requests round-robin through one pooled session for
*duration* seconds. It then reports, per provider, what the client did and
what the servers saw.

By default the fake servers run in a child process (``spawn``), so that
on a multi-core machine the client and the servers do not share one core;
their counters come back over a pipe when the run ends.

With ``--fleet N`` (:func:`run_fleet_demo`) it starts a ``redis-server``
on a free loopback port and N worker processes instead, each with its own
manager wrapped by :class:`~aiopay_auth.fleet.RedisFleet` and its share of
the workers and the pool. The report then sets the token requests the
fleet sent beside what per-process fetching would have cost: the token
requests each process's refreshers made (answered by the provider or from
Redis), every one of which a process on its own sends to the provider.

The pure parts (building the summary, the table, the JSON form, the
progress line, the exit status) are plain functions, tested directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, Protocol, TextIO

import aiohttp
import anyio
import attrs
from yarl import URL

from ._fetch import TokenSource
from ._holder import ProviderStats, TokenHolder
from ._manager import TokenManager
from ._provider import Provider
from .providers.oro import API_ACCEPT
from .testing import Dialect, FakeProvider, provider_for


__all__ = [
    "DemoConfig",
    "FleetRow",
    "FleetSummary",
    "ProviderRow",
    "ServerCounters",
    "Summary",
    "exit_status",
    "fleet_requirements",
    "fleet_summary_to_dict",
    "format_fleet_table",
    "format_progress",
    "format_table",
    "run_demo",
    "run_fleet_demo",
    "summary_to_dict",
]

ServerMode = Literal["child", "inline"]
"""Where the fake servers run: a child process, or this process's event loop."""

DIALECTS: tuple[Dialect, ...] = ("cm", "vonage", "payme", "oro")
"""The fake servers the demo starts, one per dialect."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""

_LIVE_INTERVAL = 0.25  # seconds between refreshes of the live progress line (a TTY)
_LOG_INTERVAL = 5.0  # seconds between progress lines when stderr is not a TTY
_START_TIMEOUT = 30.0  # bound on starting the child process's servers
_STOP_TIMEOUT = 5.0  # bound on the child process's orderly exit
_REQUEST_TIMEOUT = 30.0  # bound on one demo request, queueing for the pool included
_MAX_ERROR_KINDS = 5  # distinct failure descriptions kept per provider


# --- configuration and results (plain data) --------------------------------


@attrs.frozen(kw_only=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        lifetime: Seconds each fake token lives.
        duration: Seconds the workers keep sending requests.
        concurrency: How many workers loop concurrently.
        pool: Connections in the shared session's pool.
        servers: ``"child"`` runs the fake servers in a child process,
            ``"inline"`` in the demo's own event loop.
        fleet: With 1 or more, that many worker processes share tokens
            through a local ``redis-server`` (:func:`run_fleet_demo`), the
            workers and the pool split between them; 0 runs one process
            without Redis.
    """

    lifetime: float = 3.0
    duration: float = 20.0
    concurrency: int = 1000
    pool: int = 100
    servers: ServerMode = "child"
    fleet: int = 0


@attrs.frozen(kw_only=True)
class ServerCounters:
    """What one fake server counted (its public counters).

    Attributes:
        token_calls: Requests that reached the token endpoint.
        api_calls: Requests that reached the protected API.
        api_unauthorized: API requests answered 401.
        api_expired: Of those, how many carried a token that had expired.
    """

    token_calls: int = 0
    api_calls: int = 0
    api_unauthorized: int = 0
    api_expired: int = 0

    @classmethod
    def of(cls, fake: FakeProvider) -> ServerCounters:
        """Read *fake*'s counters."""
        return cls(
            token_calls=fake.token_calls,
            api_calls=fake.api_calls,
            api_unauthorized=fake.api_unauthorized,
            api_expired=fake.api_expired,
        )


@attrs.frozen(kw_only=True)
class ProviderRow:
    """One provider's client-side results.

    Attributes:
        provider: The provider's name.
        server: The fake server it talks to (several providers may share one).
        requests: Requests the workers sent to its API.
        failed: Of those, how many failed (non-2xx after the middleware's
            recovery, or an exception).
        fetches: Token requests its refresher sent (``holder.stats.fetches``).
        refreshes: Tokens published after the first one.
        recoveries: Requests resent with a fresh token after a 401.
        max_wait: The longest any request waited for a token, in seconds.
        errors: Distinct failure descriptions with their counts.
    """

    provider: str
    server: str
    requests: int = 0
    failed: int = 0
    fetches: int = 0
    refreshes: int = 0
    recoveries: int = 0
    max_wait: float = 0.0
    errors: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, provider: str, server: str, tally: Tally, stats: ProviderStats) -> ProviderRow:
        """Combine a provider's request tally with its holder's statistics."""
        return cls(
            provider=provider,
            server=server,
            requests=tally.requests,
            failed=tally.failed,
            fetches=stats.fetches,
            refreshes=stats.refreshes,
            recoveries=stats.recoveries,
            max_wait=stats.max_wait,
            errors=tuple(tally.errors.items()),
        )


@attrs.frozen(kw_only=True)
class Summary:
    """Everything the demo reports.

    Attributes:
        config: What was run.
        elapsed: Seconds from the first request to the last response.
        rows: One row per provider, in the order they were added.
        servers: Each fake server's counters, by server name.
        interrupted: Whether Ctrl-C ended the run early.
    """

    config: DemoConfig
    elapsed: float
    rows: tuple[ProviderRow, ...]
    servers: Mapping[str, ServerCounters]
    interrupted: bool = False

    @property
    def requests(self) -> int:
        """Requests sent to every provider."""
        return sum(row.requests for row in self.rows)

    @property
    def failed(self) -> int:
        """Requests that failed, over every provider."""
        return sum(row.failed for row in self.rows)

    @property
    def expired(self) -> int:
        """401 answers caused by an expired token, over every server."""
        return sum(counters.api_expired for counters in self.servers.values())

    def rate(self, requests: int) -> float:
        """*requests* per second of the run."""
        return requests / self.elapsed if self.elapsed > 0 else 0.0

    def shared_servers(self) -> frozenset[str]:
        """Servers that more than one provider talks to."""
        names = [row.server for row in self.rows]
        return frozenset(name for name in names if names.count(name) > 1)


class Tally:
    """A provider's request counters, updated by the workers."""

    __slots__ = ("errors", "failed", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.errors: dict[str, int] = {}

    def fail(self, description: str) -> None:
        """Count one failed request, remembering a few distinct reasons."""
        self.failed += 1
        errors = self.errors
        if description in errors:
            errors[description] += 1
        elif len(errors) < _MAX_ERROR_KINDS:
            errors[description] = 1


# --- pure reporting ---------------------------------------------------------


def exit_status(summary: Summary) -> int:
    """The demo's exit status.

    Returns:
        130 when Ctrl-C ended the run, 1 when any request failed or any
        request was refused for an expired token, else 0.
    """
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 1 if summary.failed or summary.expired else 0


def summary_to_dict(summary: Summary) -> dict[str, Any]:
    """The summary as a JSON-ready object (what ``--json`` prints).

    Per provider, ``token_fetches`` is the client's count and
    ``server_token_calls`` the server's; ``unauthorized`` and ``expired``
    are the server's 401 counts. When providers share a server
    (``server_shared``), the server-side figures cover all of them; the
    ``total`` counts each server once.

    Args:
        summary: The demo's results.

    Returns:
        A dict of plain JSON types.
    """
    shared = summary.shared_servers()
    providers: dict[str, Any] = {}
    for row in summary.rows:
        server = summary.servers.get(row.server, ServerCounters())
        providers[row.provider] = {
            "server": row.server,
            "server_shared": row.server in shared,
            "requests": row.requests,
            "requests_per_second": round(summary.rate(row.requests), 1),
            "failed": row.failed,
            "token_fetches": row.fetches,
            "server_token_calls": server.token_calls,
            "refreshes": row.refreshes,
            "recoveries": row.recoveries,
            "unauthorized": server.api_unauthorized,
            "expired": server.api_expired,
            "max_wait_ms": round(row.max_wait * 1000, 1),
            "errors": dict(row.errors),
        }
    servers = summary.servers.values()
    config = summary.config
    return {
        "config": {
            "lifetime": config.lifetime,
            "duration": config.duration,
            "concurrency": config.concurrency,
            "pool": config.pool,
            "servers": config.servers,
        },
        "elapsed": round(summary.elapsed, 3),
        "interrupted": summary.interrupted,
        "providers": providers,
        "servers": {name: attrs.asdict(counters) for name, counters in summary.servers.items()},
        "total": {
            "requests": summary.requests,
            "requests_per_second": round(summary.rate(summary.requests), 1),
            "failed": summary.failed,
            "token_fetches": sum(row.fetches for row in summary.rows),
            "server_token_calls": sum(c.token_calls for c in servers),
            "refreshes": sum(row.refreshes for row in summary.rows),
            "recoveries": sum(row.recoveries for row in summary.rows),
            "unauthorized": sum(c.api_unauthorized for c in servers),
            "expired": summary.expired,
            "max_wait_ms": round(
                max((row.max_wait for row in summary.rows), default=0.0) * 1000, 1
            ),
        },
        "exit_status": exit_status(summary),
    }


# Columns of the table: (group heading, heading, key in summary_to_dict's rows).
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("", "requests", "requests"),
    ("", "req/s", "requests_per_second"),
    ("", "failed", "failed"),
    ("token fetches", "client", "token_fetches"),
    ("token fetches", "server", "server_token_calls"),
    ("", "refreshes", "refreshes"),
    ("401s at server", "all", "unauthorized"),
    ("401s at server", "expired", "expired"),
    ("longest token", "wait ms", "max_wait_ms"),
)
_SERVER_SIDE = frozenset({"server_token_calls", "unauthorized", "expired"})
_SHARED_MARK = "*"


def _cell(key: str, value: object) -> str:
    if key == "requests_per_second":
        return f"{value:,.0f}"
    if key == "max_wait_ms":
        return f"{value:,.1f}"
    return f"{value:,}"


def _grid(columns: Sequence[tuple[str, str, str]], body: Sequence[Sequence[str]]) -> list[str]:
    """Lay out a table: group headings, headings, the rows, a rule and the last (total) row."""
    groups = ["", *(group for group, _, _ in columns)]
    headings = ["provider", *(heading for _, heading, _ in columns)]
    widths = [max(len(r[i]) for r in [headings, *body]) for i in range(len(headings))]
    # A group heading spans its columns: widen the last of them if it is too narrow.
    group_line: list[str] = []
    first = 1
    for group, members in itertools.groupby(groups[1:]):
        last = first + len(list(members)) - 1
        span = sum(widths[first : last + 1]) + 2 * (last - first)
        if len(group) > span:
            widths[last] += len(group) - span
            span = len(group)
        group_line.append(group.center(span))
        first = last + 1

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [
        "  ".join([" " * widths[0], *group_line]).rstrip(),
        render(headings),
        *(render(cells) for cells in body[:-1]),
        "-" * len(render(body[-1])),
        render(body[-1]),
    ]


def _provider_rows(
    summary: Summary, data: dict[str, Any], columns: Sequence[tuple[str, str, str]]
) -> list[str]:
    """The grid of per-provider rows and the total, then the shared-server notes."""
    body: list[list[str]] = []
    for name, row in data["providers"].items():
        mark = _SHARED_MARK if row["server_shared"] else ""
        body.append(
            [name]
            + [
                _cell(key, row[key]) + (mark if key in _SERVER_SIDE else "")
                for _, _, key in columns
            ]
        )
    body.append(["total"] + [_cell(key, data["total"][key]) for _, _, key in columns])
    lines = _grid(columns, body)
    for server in sorted(summary.shared_servers()):
        sharing = ", ".join(row.provider for row in summary.rows if row.server == server)
        lines.append(
            f"{_SHARED_MARK} {sharing} share the {server} server; "
            "its counts cover all of them (counted once in the total)."
        )
    return lines


def _verdict(summary: Summary) -> list[str]:
    """The errors met, then one line saying whether the run passed."""
    lines = [
        f"! {row.provider}: {count:,} x {description}"
        for row in summary.rows
        for description, count in row.errors
    ]
    status = exit_status(summary)
    if status == 0:
        lines.append("OK: no failed request, no request refused for an expired token.")
    elif status == 1:
        lines.append(
            f"FAILED: {summary.failed:,} failed requests, "
            f"{summary.expired:,} refused for an expired token."
        )
    return lines


def format_table(summary: Summary) -> str:
    """The summary as a text table: a heading, one row per provider and a total.

    Server-side figures of providers that share a server are marked and
    explained under the table; the total counts each server once.

    Args:
        summary: The demo's results.

    Returns:
        The table, lines joined by newlines, without a trailing newline.
    """
    data = summary_to_dict(summary)
    config = summary.config
    lines = [
        f"aiopay-auth demo: {len(summary.rows)} providers on {len(summary.servers)} fake servers, "
        f"{config.concurrency:,} workers, pool {config.pool:,}, tokens live {config.lifetime:g} s, "
        f"ran {summary.elapsed:.1f} s" + (" (interrupted)" if summary.interrupted else ""),
        "",
    ]
    lines.extend(_provider_rows(summary, data, _COLUMNS))
    lines.extend(_verdict(summary))
    return "\n".join(lines)


def format_progress(elapsed: float, requests: int, rate: float, fetches: int, failed: int) -> str:
    """One progress line.

    Args:
        elapsed: Seconds since the workers started.
        requests: Requests completed so far.
        rate: Requests per second over the last interval.
        fetches: Token requests sent so far, over every provider.
        failed: Failed requests so far.

    Returns:
        The line, without a newline.
    """
    return (
        f"{elapsed:6.1f} s  {requests:>9,} requests  {rate:>7,.0f} req/s  "
        f"{fetches:>4,} token fetches  {failed:,} failed"
    )


# --- the fake servers -------------------------------------------------------


@attrs.frozen(kw_only=True)
class Lane:
    """One provider the workers send to: its profile and a request to send.

    Plain, picklable data, so that a child process can build it.

    Attributes:
        provider: The provider profile, aimed at its fake server.
        server: The fake server's name.
        url: Where the workers POST payments.
        headers: Headers of every request.
        jsonapi_type: The JSON:API resource type for Oro; ``None`` for a
            plain JSON payment.
    """

    provider: Provider
    server: str
    url: URL
    headers: tuple[tuple[str, str], ...]
    jsonapi_type: str | None = None


_JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))
_JSONAPI_HEADERS = (("Content-Type", API_ACCEPT), ("Accept", API_ACCEPT))


def plan_lanes(fakes: Iterable[FakeProvider]) -> tuple[Lane, ...]:
    """The providers and requests of the demo, for started fake servers.

    Args:
        fakes: One started fake per dialect of :data:`DIALECTS`.

    Returns:
        One lane per provider: Oro gets a back-office and a storefront one.
    """
    lanes: list[Lane] = []
    for fake in fakes:
        dialect = fake.dialect
        if dialect == "oro":
            lanes.append(
                Lane(
                    provider=provider_for(fake, name="oro-backoffice"),
                    server=dialect,
                    url=fake.api_base / "orders",
                    headers=_JSONAPI_HEADERS,
                    jsonapi_type="orders",
                )
            )
            lanes.append(
                Lane(
                    provider=provider_for(fake, application="storefront", name="oro-storefront"),
                    server=dialect,
                    url=fake.storefront_api_base / "checkouts",
                    headers=_JSONAPI_HEADERS,
                    jsonapi_type="checkouts",
                )
            )
            continue
        if dialect == "cm":
            url = fake.api_base.joinpath("paymentmethods", "checkout", "v1", "transactions")
        elif dialect == "payme":
            url = fake.api_base / "charges"
        else:
            url = fake.api_base / "payments"
        lanes.append(
            Lane(
                provider=provider_for(fake, name=dialect),
                server=dialect,
                url=url,
                headers=_JSON_HEADERS,
            )
        )
    return tuple(lanes)


def payment_body(lane: Lane, reference: str) -> bytes:
    """A small payment document for *lane*'s API.

    Args:
        lane: Where it is sent.
        reference: The merchant's reference, unique per request.

    Returns:
        The JSON body (JSON:API for Oro).
    """
    if lane.jsonapi_type is not None:
        document: dict[str, Any] = {
            "data": {
                "type": lane.jsonapi_type,
                "attributes": {"identifier": reference, "currency": "EUR", "total": "12.50"},
            }
        }
    else:
        document = {
            "reference": reference,
            "amount": {"currency": "EUR", "value": 1250},
            "description": "aiopay-auth demo payment",
        }
    return json.dumps(document, separators=(",", ":")).encode()


@attrs.frozen
class _Fleet:
    lanes: tuple[Lane, ...]
    counters: Callable[[], Awaitable[dict[str, ServerCounters]]]


@contextlib.asynccontextmanager
async def _inline_fleet(lifetime: float) -> AsyncIterator[_Fleet]:
    async with contextlib.AsyncExitStack() as stack:
        fakes = [
            await stack.enter_async_context(FakeProvider(dialect, lifetime=lifetime))
            for dialect in DIALECTS
        ]

        async def counters() -> dict[str, ServerCounters]:
            return {fake.dialect: ServerCounters.of(fake) for fake in fakes}

        yield _Fleet(plan_lanes(fakes), counters)


async def _readable(fd: int) -> None:
    """Wait until *fd* is readable, without blocking the loop or a thread."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _receive(conn: Connection) -> Any:
    """The next message on *conn*, once it is there."""
    await _readable(conn.fileno())
    return conn.recv()


def serve_fakes(conn: Connection, lifetime: float) -> None:
    """The child process: run the fake servers until told to stop.

    Sends the lanes once the servers listen; on ``"stop"`` sends their
    counters and exits. Ctrl-C is left to the parent, which reaches every
    process in the terminal's process group: the parent stops the child
    in order. If the parent goes away, the child exits too.

    Args:
        conn: This end of the pipe to the parent.
        lifetime: Seconds each token lives.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already so since birth (see _ChildFleet)

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            fakes = [
                await stack.enter_async_context(FakeProvider(dialect, lifetime=lifetime))
                for dialect in DIALECTS
            ]
            conn.send(("lanes", plan_lanes(fakes)))
            with contextlib.suppress(EOFError, OSError):
                while await _receive(conn) != "stop":
                    pass
                conn.send(("counters", {f.dialect: ServerCounters.of(f) for f in fakes}))

    try:
        asyncio.run(serve())
    finally:
        conn.close()


def _start_deaf_to_ctrl_c(process: BaseProcess) -> None:
    """Start *process* with SIGINT ignored, as it stays for its whole life.

    A Ctrl-C reaches every process of the terminal's process group. Were
    the child to learn to ignore it only once running, a Ctrl-C during its
    start-up (while it imports) would kill it with a traceback. An ignored
    signal stays ignored across exec, and Python leaves it so.
    (Blocking SIGINT instead would not do: starting multiprocessing's
    resource tracker unblocks it.) A Ctrl-C in the few milliseconds of the
    start itself is lost.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread, where no Ctrl-C is handled anyway
        process.start()
        return
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class _ChildFleet:
    """The parent's side of the fake servers running in a child process."""

    def __init__(self, lifetime: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve_fakes,
            args=(child_conn, lifetime),
            name="aiopay-auth demo servers",
            daemon=True,
        )
        _start_deaf_to_ctrl_c(self._process)
        child_conn.close()  # so that the child's exit reads as end-of-file here
        self._stopped = False

    async def _expect(self, kind: str) -> Any:
        try:
            got, payload = await _receive(self._conn)
        except (EOFError, OSError):
            msg = "the fake servers' process exited unexpectedly"
            raise RuntimeError(msg) from None
        if got != kind:  # pragma: no cover - a protocol error between our own processes
            msg = f"expected {kind!r} from the fake servers' process, got {got!r}"
            raise RuntimeError(msg)
        return payload

    async def lanes(self) -> tuple[Lane, ...]:
        with anyio.fail_after(_START_TIMEOUT):
            lanes: tuple[Lane, ...] = await self._expect("lanes")
        return lanes

    async def counters(self) -> dict[str, ServerCounters]:
        self._stopped = True
        self._conn.send("stop")
        with anyio.fail_after(_STOP_TIMEOUT):
            counters: dict[str, ServerCounters] = await self._expect("counters")
        return counters

    async def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError):
                self._conn.send("stop")
        await _reap(self._process)
        self._conn.close()


async def _reap(process: BaseProcess) -> None:
    """Wait for a child told to stop; terminate, then kill, one that hangs."""
    with anyio.move_on_after(_STOP_TIMEOUT):
        await _readable(process.sentinel)
    if process.is_alive():  # pragma: no cover - only when the child hangs
        process.terminate()
        process.join(1.0)
        if process.is_alive():
            process.kill()
    process.join()
    process.close()


@contextlib.asynccontextmanager
async def _child_fleet(lifetime: float) -> AsyncIterator[_Fleet]:
    child = _ChildFleet(lifetime)
    try:
        yield _Fleet(await child.lanes(), child.counters)
    finally:
        with anyio.CancelScope(shield=True):
            await child.close()


# --- the run ----------------------------------------------------------------


class _Run:
    """State shared by the workers, the progress reporter and the Ctrl-C handler."""

    __slots__ = ("deadline", "holders", "interrupted", "lanes", "started", "stopping", "tallies")

    def __init__(self, lanes: tuple[Lane, ...], holders: tuple[TokenHolder, ...]) -> None:
        self.lanes = lanes
        self.holders = holders
        self.tallies = tuple(Tally() for _ in lanes)
        self.started = time.monotonic()
        self.deadline = math.inf
        self.stopping = False
        self.interrupted = False

    def requests(self) -> int:
        return sum(tally.requests for tally in self.tallies)

    def failed(self) -> int:
        return sum(tally.failed for tally in self.tallies)

    def fetches(self) -> int:
        return sum(holder.stats.fetches for holder in self.holders)


async def _worker(http: aiohttp.ClientSession, run: _Run, index: int) -> None:
    """Send payments round-robin over the providers until the run ends."""
    lanes, tallies = run.lanes, run.tallies
    count = len(lanes)
    position = index % count
    sent = 0
    while not run.stopping and time.monotonic() < run.deadline:
        lane, tally = lanes[position], tallies[position]
        position = (position + 1) % count
        sent += 1
        body = payment_body(lane, f"demo-{index}-{sent}")
        try:
            async with http.post(lane.url, data=body, headers=lane.headers) as response:
                await response.read()
                status = response.status
        except Exception as exc:  # every failure is counted and reported
            tally.requests += 1
            tally.fail(f"{type(exc).__name__}: {exc}"[:120])
            continue
        tally.requests += 1
        if not 200 <= status < 300:
            tally.fail(f"HTTP {status}")


class _Progress(Protocol):
    """What the progress reporter and the Ctrl-C handler need of a run."""

    started: float
    stopping: bool
    interrupted: bool

    def requests(self) -> int: ...

    def failed(self) -> int: ...

    def fetches(self) -> int: ...


async def _report_progress(run: _Progress, stream: TextIO, live: bool) -> None:
    """Write a progress line every so often until cancelled."""
    interval = _LIVE_INTERVAL if live else _LOG_INTERVAL
    last_time, last_requests = run.started, 0
    try:
        while True:
            await anyio.sleep(interval)
            now, requests = time.monotonic(), run.requests()
            rate = (requests - last_requests) / (now - last_time) if now > last_time else 0.0
            last_time, last_requests = now, requests
            line = format_progress(now - run.started, requests, rate, run.fetches(), run.failed())
            stream.write(f"\r{line}\x1b[K" if live else line + "\n")
            stream.flush()
    finally:
        if live:
            stream.write("\r\x1b[K")
            stream.flush()


@contextlib.contextmanager
def _interrupt_handler(run: _Progress, on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """First Ctrl-C ends the run early (with a summary); the second cancels everything."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def interrupted() -> None:
        if run.stopping and task is not None:
            task.cancel()
        run.stopping = run.interrupted = True
        if on_stop is not None:
            on_stop()

    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        installed = False
    else:
        installed = True
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)  # asyncio.run's own handler, if any


async def run_demo(
    config: DemoConfig, *, progress: TextIO | None = None, live: bool = False
) -> Summary:
    """Run the demo and return its summary.

    Args:
        config: What to run.
        progress: Where to write progress lines (``None``: nowhere).
        live: Rewrite one line a few times per second (for a terminal)
            instead of writing a line every five seconds.

    Returns:
        The summary; :func:`exit_status` tells whether it went well.
    """
    fleet_of = _child_fleet if config.servers == "child" else _inline_fleet
    async with fleet_of(config.lifetime) as fleet, TokenManager() as tokens:
        holders = tuple(tokens.add(lane.provider) for lane in fleet.lanes)
        run = _Run(fleet.lanes, holders)
        timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT)
        with _interrupt_handler(run):
            async with tokens.session(*holders, limit=config.pool, timeout=timeout) as http:
                run.started = time.monotonic()
                run.deadline = run.started + config.duration
                async with anyio.create_task_group() as reporting:
                    if progress is not None:
                        reporting.start_soon(_report_progress, run, progress, live)
                    async with anyio.create_task_group() as workers:
                        for index in range(config.concurrency):
                            workers.start_soon(_worker, http, run, index)
                    reporting.cancel_scope.cancel()
                elapsed = time.monotonic() - run.started
        await tokens.aclose()
        servers = await fleet.counters()
    rows = tuple(
        ProviderRow.of(lane.provider.name, lane.server, tally, holder.stats)
        for lane, tally, holder in zip(run.lanes, run.tallies, holders, strict=True)
    )
    return Summary(
        config=config,
        elapsed=elapsed,
        rows=rows,
        servers=servers,
        interrupted=run.interrupted,
    )


# --- fleet mode: worker processes sharing tokens through Redis ----------------

_FLEET_LEASE_TTL = 10.0  # seconds; longer than any demo token request takes
_FLEET_EXTRA = "pip install 'aiopay-auth[redis]'"


def fleet_requirements() -> str | None:
    """Why ``demo --fleet`` cannot run here, or ``None`` when it can.

    It needs a ``redis-server`` binary on the ``PATH`` and the ``redis``
    and ``cryptography`` packages (the ``redis`` extra).
    """
    if shutil.which("redis-server") is None:
        return "--fleet needs redis-server on the PATH (e.g. apt-get install redis-server)"
    for package in ("redis", "cryptography"):
        if importlib.util.find_spec(package) is None:
            return f"--fleet needs the {package} package: {_FLEET_EXTRA}"
    return None


@attrs.frozen(kw_only=True)
class FleetRow:
    """One provider's fleet-wide sharing figures, beside its :class:`ProviderRow`.

    Attributes:
        provider: The provider's name.
        shared_hits: Tokens the processes took from Redis instead of fetching them.
        alone: Token requests the processes' refreshers made, each answered
            by the provider or from Redis: what per-process fetching would
            have cost, since a process on its own sends every one of them to
            the provider. Counted like the fleet's fetches (when sent), so a
            fetch cut short at the end counts in both.
        stores: Each process's store state at the end (``"shared"``, or
            ``"local"`` if Redis had failed it).
    """

    provider: str
    shared_hits: int = 0
    alone: int = 0
    stores: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class FleetSummary:
    """What ``demo --fleet`` reports.

    Attributes:
        summary: The run in the demo's usual form, each row summed over the
            processes; a row's ``fetches`` are the token requests the
            processes sent to the provider between them.
        processes: How many worker processes ran.
        concurrency: Workers in each process.
        pools: Connections in each process's pool.
        fleet_rows: Per provider, what sharing through Redis saved.
    """

    summary: Summary
    processes: int
    concurrency: tuple[int, ...]
    pools: tuple[int, ...]
    fleet_rows: tuple[FleetRow, ...]

    @property
    def fleet_fetches(self) -> int:
        """Token requests the whole fleet sent."""
        return sum(row.fetches for row in self.summary.rows)

    @property
    def alone(self) -> int:
        """Token requests per-process fetching would have sent (see :attr:`FleetRow.alone`)."""
        return sum(row.alone for row in self.fleet_rows)

    @property
    def local(self) -> int:
        """Provider-process pairs that ended fetching alone (Redis failed them)."""
        return sum(store != "shared" for row in self.fleet_rows for store in row.stores)


def _split(total: int, parts: int) -> tuple[int, ...]:
    """*total* shared as evenly as can be between *parts*, at least 1 each."""
    return tuple(max(1, total // parts + (index < total % parts)) for index in range(parts))


def _each(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def fleet_summary_to_dict(fleet: FleetSummary) -> dict[str, Any]:
    """The fleet summary as a JSON-ready object (what ``demo --fleet N --json`` prints).

    The demo's usual summary (:func:`summary_to_dict`), summed over the
    processes, where ``token_fetches`` are the token requests the fleet
    sent; plus, per provider and in the total, ``per_process_token_fetches``
    (what per-process fetching would have cost) and ``shared_hits``, and a
    ``fleet`` section.

    Args:
        fleet: The fleet demo's results.

    Returns:
        A dict of plain JSON types.
    """
    data = summary_to_dict(fleet.summary)
    status = data.pop("exit_status")
    data["config"]["fleet"] = fleet.processes
    for row in fleet.fleet_rows:
        entry = data["providers"][row.provider]
        entry["per_process_token_fetches"] = row.alone
        entry["shared_hits"] = row.shared_hits
        entry["stores"] = {store: row.stores.count(store) for store in sorted(set(row.stores))}
    data["total"]["per_process_token_fetches"] = fleet.alone
    data["total"]["shared_hits"] = sum(row.shared_hits for row in fleet.fleet_rows)
    data["fleet"] = {
        "processes": fleet.processes,
        "concurrency": list(fleet.concurrency),
        "pool": list(fleet.pools),
        "token_fetches": fleet.fleet_fetches,
        "per_process_token_fetches": fleet.alone,
        "ended_local": fleet.local,
    }
    data["exit_status"] = status
    return data


_FLEET_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("", "requests", "requests"),
    ("", "req/s", "requests_per_second"),
    ("", "failed", "failed"),
    ("token fetches", "fleet", "token_fetches"),
    ("token fetches", "server", "server_token_calls"),
    ("token fetches", "per process", "per_process_token_fetches"),
    ("", "from redis", "shared_hits"),
    ("401s at server", "all", "unauthorized"),
    ("401s at server", "expired", "expired"),
    ("longest token", "wait ms", "max_wait_ms"),
)


def format_fleet_table(fleet: FleetSummary) -> str:
    """The fleet summary as a text table, with fleet-wide against per-process fetches.

    Args:
        fleet: The fleet demo's results.

    Returns:
        The table, lines joined by newlines, without a trailing newline.
    """
    summary, config = fleet.summary, fleet.summary.config
    data = fleet_summary_to_dict(fleet)
    processes = fleet.processes
    lines = [
        f"aiopay-auth demo --fleet {processes}: {processes} worker processes share tokens "
        "through a local redis-server",
        f"{len(summary.rows)} providers on {len(summary.servers)} fake servers, "
        f"{sum(fleet.concurrency):,} workers ({_each(fleet.concurrency)} per process), "
        f"pool {_each(fleet.pools)} per process, tokens live {config.lifetime:g} s, "
        f"ran {summary.elapsed:.1f} s" + (" (interrupted)" if summary.interrupted else ""),
        "",
    ]
    lines.extend(_provider_rows(summary, data, _FLEET_COLUMNS))
    lines.append(
        f"token fetches: fleet = sent by the {processes} processes together; "
        "server = counted by the fake servers;"
    )
    lines.append(
        "  per process = what per-process fetching would have cost: "
        "every token request each process made, sent by itself."
    )
    fetched, alone = fleet.fleet_fetches, fleet.alone
    saving = f" ({alone / fetched:.1f}x fewer)" if fetched else ""
    ended = (
        "every process ended on shared tokens"
        if not fleet.local
        else f"{fleet.local} provider-process pairs ended fetching alone (Redis failed them)"
    )
    lines.append(
        f"Fleet-wide: {fetched:,} token fetches where per-process fetching would have cost "
        f"{alone:,}{saving}; {ended}."
    )
    lines.extend(_verdict(summary))
    return "\n".join(lines)


# The worker processes -------------------------------------------------------


@attrs.frozen(kw_only=True)
class _FleetJob:
    """What one worker process runs (pickled to it; never on a command line)."""

    index: int
    lanes: tuple[Lane, ...]
    redis_url: str
    key: bytes = attrs.field(repr=False)
    first_worker: int
    concurrency: int
    pool: int
    duration: float
    progress_interval: float


@attrs.frozen(kw_only=True)
class _FleetResult:
    """What one worker process reports at the end, one entry per lane."""

    rows: tuple[ProviderRow, ...]
    fleet_rows: tuple[FleetRow, ...]
    elapsed: float


def serve_fleet_worker(conn: Connection, job: _FleetJob) -> None:
    """A fleet worker process: run *job* when told to go, report, exit.

    Sends ``("ready", None)`` once started; on ``"go"`` adds its providers
    and runs until the duration is over or ``"stop"`` comes, sending
    ``("progress", (requests, failed, token_fetches))`` now and then. Then
    sends ``("finished", None)``, keeps its tokens fresh until ``"stop"``
    (sent once every process is finished), and ends with ``("result",
    _FleetResult)``. Ctrl-C is left to the parent, as for the servers'
    process; if the parent goes away, the worker stops.

    Args:
        conn: This end of the pipe to the parent.
        job: What to run.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already so since birth
    try:
        with contextlib.suppress(EOFError, OSError):  # the parent went away
            asyncio.run(_fleet_worker(conn, job))
    finally:
        conn.close()


async def _fleet_worker(conn: Connection, job: _FleetJob) -> None:
    import redis.asyncio  # noqa: PLC0415 - the fleet mode's optional dependency

    from .fleet import RedisFleet, SharedTokenSource  # noqa: PLC0415

    client = redis.asyncio.Redis.from_url(job.redis_url)
    fleet = RedisFleet(client, encryption_key=job.key, lease_ttl=_FLEET_LEASE_TTL)
    sources: dict[str, SharedTokenSource] = {}

    def wrap(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        source = sources[holder.name] = fleet.wrap(holder, inner)
        return source

    def fetches() -> int:
        return sum(source.http_fetches for source in sources.values())

    try:
        async with TokenManager(token_source=wrap) as tokens:
            conn.send(("ready", None))
            go = await _receive(conn) == "go"
            # Every process adds its providers on "go" and keeps them until all
            # are finished (below), so that the refreshers of the fleet run over
            # the same span: none fetches alone while the others start or stop.
            holders = tuple(tokens.add(lane.provider) for lane in job.lanes)
            run = _Run(job.lanes, holders)
            run.stopping = not go
            timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT)
            async with tokens.session(*holders, limit=job.pool, timeout=timeout) as http:
                run.started = time.monotonic()
                run.deadline = run.started + job.duration
                async with anyio.create_task_group() as helpers:
                    helpers.start_soon(_listen_for_stop, conn, run)
                    helpers.start_soon(_send_progress, conn, run, fetches, job.progress_interval)
                    async with anyio.create_task_group() as workers:
                        for offset in range(job.concurrency):
                            workers.start_soon(_worker, http, run, job.first_worker + offset)
                    helpers.cancel_scope.cancel()
                elapsed = time.monotonic() - run.started
            conn.send(("finished", None))
            while await _receive(conn) != "stop":
                pass
            await tokens.aclose()
    finally:
        await client.aclose()
    rows, fleet_rows = [], []
    for lane, tally, holder in zip(run.lanes, run.tallies, holders, strict=True):
        source, stats = sources[holder.name], holder.stats
        rows.append(
            attrs.evolve(
                ProviderRow.of(lane.provider.name, lane.server, tally, stats),
                fetches=source.http_fetches,
            )
        )
        fleet_rows.append(
            FleetRow(
                provider=lane.provider.name,
                shared_hits=source.shared_hits,
                alone=source.http_fetches + source.shared_hits,
                stores=(stats.store or "local",),
            )
        )
    conn.send(
        ("result", _FleetResult(rows=tuple(rows), fleet_rows=tuple(fleet_rows), elapsed=elapsed))
    )


async def _listen_for_stop(conn: Connection, run: _Run) -> None:
    try:
        while await _receive(conn) != "stop":
            pass
    finally:  # "stop", or the parent went away
        run.stopping = True


async def _send_progress(
    conn: Connection, run: _Run, fetches: Callable[[], int], interval: float
) -> None:
    while True:
        await anyio.sleep(interval)
        conn.send(("progress", (run.requests(), run.failed(), fetches())))


class _FleetProcess:
    """The parent's side of one worker process."""

    def __init__(self, job: _FleetJob) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve_fleet_worker,
            args=(child_conn, job),
            name=f"aiopay-auth demo worker {job.index}",
            daemon=True,
        )
        _start_deaf_to_ctrl_c(self._process)
        child_conn.close()  # so that the child's exit reads as end-of-file here
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self.done = anyio.Event()
        self.figures: tuple[int, int, int] = (0, 0, 0)  # requests, failed, token fetches
        self.result: _FleetResult | None = None
        self._closed = False

    async def listen(self) -> None:
        """Take the worker's messages until its result (or its end)."""
        try:
            while True:
                kind, payload = await _receive(self._conn)
                if kind == "ready":
                    self.ready.set()
                elif kind == "finished":
                    self.finished.set()
                elif kind == "progress":
                    self.figures = payload
                elif kind == "result":
                    self.result = payload
                    return
        except (EOFError, OSError):
            return
        finally:
            self.ready.set()  # a worker that died starting up must not be waited for
            self.finished.set()
            self.done.set()

    def send(self, message: str) -> None:
        if not self.done.is_set():
            with contextlib.suppress(OSError):
                self._conn.send(message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.send("stop")
        await _reap(self._process)
        self._conn.close()


class _FleetRun:
    """The parent's view of a fleet run, for the progress line and Ctrl-C."""

    def __init__(self, members: Sequence[_FleetProcess]) -> None:
        self.members = members
        self.started = time.monotonic()
        self.stopping = False
        self.interrupted = False

    def requests(self) -> int:
        return sum(member.figures[0] for member in self.members)

    def failed(self) -> int:
        return sum(member.figures[1] for member in self.members)

    def fetches(self) -> int:
        return sum(member.figures[2] for member in self.members)

    def broadcast(self, message: str) -> None:
        for member in self.members:
            member.send(message)


@contextlib.asynccontextmanager
async def _local_redis() -> AsyncIterator[str]:
    """A ``redis-server`` on a free loopback port, without persistence, for the run.

    It stays in the demo's process group, so whatever signals the demo's
    group (Ctrl-C, a closed terminal) reaches it too; otherwise it is
    stopped on the way out.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(fleet_requirements() or "no redis-server")
    with tempfile.TemporaryDirectory(prefix="aiopay-auth-demo-redis-") as workdir:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        # fmt: off
        process = await asyncio.create_subprocess_exec(
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--protected-mode", "yes",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        # fmt: on
        try:
            await _wait_for_redis(process, port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            with anyio.CancelScope(shield=True):
                await _end_process(process)


async def _wait_for_redis(process: asyncio.subprocess.Process, port: int) -> None:
    with anyio.fail_after(_START_TIMEOUT):
        while process.returncode is None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            try:
                writer.write(b"PING\r\n")
                if (await reader.readline()).startswith(b"+PONG"):
                    return
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await anyio.sleep(0.02)
    msg = f"redis-server exited at start (is port {port} taken?)"
    raise RuntimeError(msg)


async def _end_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(_STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:  # pragma: no cover - only when redis-server hangs
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


def _combine(rows: Sequence[ProviderRow]) -> ProviderRow:
    """One provider's rows from every process, summed."""
    errors: dict[str, int] = {}
    for row in rows:
        for description, count in row.errors:
            if description in errors or len(errors) < _MAX_ERROR_KINDS:
                errors[description] = errors.get(description, 0) + count
    first = rows[0]
    return ProviderRow(
        provider=first.provider,
        server=first.server,
        requests=sum(row.requests for row in rows),
        failed=sum(row.failed for row in rows),
        fetches=sum(row.fetches for row in rows),
        refreshes=sum(row.refreshes for row in rows),
        recoveries=sum(row.recoveries for row in rows),
        max_wait=max(row.max_wait for row in rows),
        errors=tuple(errors.items()),
    )


def _combine_fleet(rows: Sequence[FleetRow]) -> FleetRow:
    return FleetRow(
        provider=rows[0].provider,
        shared_hits=sum(row.shared_hits for row in rows),
        alone=sum(row.alone for row in rows),
        stores=tuple(store for row in rows for store in row.stores),
    )


async def run_fleet_demo(
    config: DemoConfig, *, progress: TextIO | None = None, live: bool = False
) -> FleetSummary:
    """Run the demo with ``config.fleet`` worker processes sharing tokens through Redis.

    Starts a ``redis-server`` on a free loopback port and the fake servers,
    then the worker processes: each adds the five providers to its own
    :class:`~aiopay_auth.TokenManager` with :meth:`RedisFleet.wrap
    <aiopay_auth.fleet.RedisFleet.wrap>` (tokens encrypted with a key made
    for the run) and runs its share of the workers. They all start sending
    at once, for ``config.duration`` seconds.

    Args:
        config: What to run; ``config.fleet`` processes.
        progress: Where to write progress lines (``None``: nowhere).
        live: Rewrite one line a few times per second (for a terminal).

    Returns:
        The summary; ``exit_status(result.summary)`` tells whether it went well.

    Raises:
        RuntimeError: redis-server or a worker process did not start or
            exited unexpectedly.
    """
    from cryptography.fernet import Fernet  # noqa: PLC0415 - the fleet mode's optional dependency

    processes = max(1, config.fleet)
    concurrency = _split(config.concurrency, processes)
    pools = _split(config.pool, processes)
    interval = _LIVE_INTERVAL if live else 1.0
    key = Fernet.generate_key()
    fakes_of = _child_fleet if config.servers == "child" else _inline_fleet
    members: list[_FleetProcess] = []
    async with _local_redis() as redis_url, fakes_of(config.lifetime) as fakes:
        try:
            for index in range(processes):
                job = _FleetJob(
                    index=index,
                    lanes=fakes.lanes,
                    redis_url=redis_url,
                    key=key,
                    first_worker=sum(concurrency[:index]),
                    concurrency=concurrency[index],
                    pool=pools[index],
                    duration=config.duration,
                    progress_interval=interval,
                )
                members.append(_FleetProcess(job))
            run = _FleetRun(members)
            async with anyio.create_task_group() as listening:
                for member in members:
                    listening.start_soon(member.listen)
                with _interrupt_handler(run, on_stop=lambda: run.broadcast("stop")):
                    with anyio.fail_after(_START_TIMEOUT):
                        for member in members:
                            await member.ready.wait()
                    if any(member.done.is_set() for member in members):
                        msg = "a fleet worker process exited unexpectedly"
                        raise RuntimeError(msg)
                    run.broadcast("stop" if run.stopping else "go")
                    run.started = time.monotonic()
                    async with anyio.create_task_group() as reporting:
                        if progress is not None:
                            reporting.start_soon(_report_progress, run, progress, live)
                        for member in members:
                            await member.finished.wait()
                        run.broadcast("stop")  # all together, once all are finished
                        for member in members:
                            await member.done.wait()
                        reporting.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for member in members:
                    await member.close()
        servers = await fakes.counters()
    results = [member.result for member in members]
    if any(result is None for result in results):
        msg = "a fleet worker process exited unexpectedly"
        raise RuntimeError(msg)
    done = [result for result in results if result is not None]
    rows = tuple(_combine(lane) for lane in zip(*(r.rows for r in done), strict=True))
    fleet_rows = tuple(
        _combine_fleet(lane) for lane in zip(*(r.fleet_rows for r in done), strict=True)
    )
    summary = Summary(
        config=config,
        elapsed=max(result.elapsed for result in done),
        rows=rows,
        servers=servers,
        interrupted=run.interrupted,
    )
    return FleetSummary(
        summary=summary,
        processes=processes,
        concurrency=concurrency,
        pools=pools,
        fleet_rows=fleet_rows,
    )
