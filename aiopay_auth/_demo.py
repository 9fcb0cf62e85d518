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

The pure parts (building the summary, the table, the JSON form, the
progress line, the exit status) are plain functions, tested directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import signal
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
from typing import Any, Literal, TextIO

import aiohttp
import anyio
import attrs
from yarl import URL

from ._holder import ProviderStats, TokenHolder
from ._manager import TokenManager
from ._provider import Provider
from .providers.oro import API_ACCEPT
from .testing import Dialect, FakeProvider, provider_for


__all__ = [
    "DemoConfig",
    "ProviderRow",
    "ServerCounters",
    "Summary",
    "exit_status",
    "format_progress",
    "format_table",
    "run_demo",
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
    """

    lifetime: float = 3.0
    duration: float = 20.0
    concurrency: int = 1000
    pool: int = 100
    servers: ServerMode = "child"


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
    body: list[list[str]] = []
    for name, row in data["providers"].items():
        mark = _SHARED_MARK if row["server_shared"] else ""
        body.append(
            [name]
            + [
                _cell(key, row[key]) + (mark if key in _SERVER_SIDE else "")
                for _, _, key in _COLUMNS
            ]
        )
    body.append(["total"] + [_cell(key, data["total"][key]) for _, _, key in _COLUMNS])
    groups = ["", *(group for group, _, _ in _COLUMNS)]
    headings = ["provider", *(heading for _, heading, _ in _COLUMNS)]
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

    lines.append("  ".join([" " * widths[0], *group_line]).rstrip())
    lines.append(render(headings))
    lines.extend(render(cells) for cells in body[:-1])
    lines.append("-" * len(render(body[-1])))
    lines.append(render(body[-1]))
    for server in sorted(summary.shared_servers()):
        sharing = ", ".join(row.provider for row in summary.rows if row.server == server)
        lines.append(
            f"{_SHARED_MARK} {sharing} share the {server} server; "
            "its counts cover all of them (counted once in the total)."
        )
    for row in summary.rows:
        for description, count in row.errors:
            lines.append(f"! {row.provider}: {count:,} x {description}")
    status = exit_status(summary)
    if status == 0:
        lines.append("OK: no failed request, no request refused for an expired token.")
    elif status == 1:
        lines.append(
            f"FAILED: {summary.failed:,} failed requests, "
            f"{summary.expired:,} refused for an expired token."
        )
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
        process = self._process
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError):
                self._conn.send("stop")
        with anyio.move_on_after(_STOP_TIMEOUT):
            await _readable(process.sentinel)
        if process.is_alive():  # pragma: no cover - only when the child hangs
            process.terminate()
            process.join(1.0)
            if process.is_alive():
                process.kill()
        process.join()
        process.close()
        self._conn.close()


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


async def _report_progress(run: _Run, stream: TextIO, live: bool) -> None:
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
def _interrupt_handler(run: _Run) -> Iterator[None]:
    """First Ctrl-C ends the run early (with a summary); the second cancels everything."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def interrupted() -> None:
        if run.stopping and task is not None:
            task.cancel()
        run.stopping = run.interrupted = True

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
