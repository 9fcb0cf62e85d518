"""The aiohttp scenarios side by side in one process: paired throughput and client CPU.

Separate runs of one scenario after another move by 15-20 % between rounds
on a shared 2-core machine, more than the effects they judge. Here every
aiohttp-based client is opened once, side by side in this one process,
against the same fake provider as the main section
(:class:`~benchmarks.server.ServerProcess`, day-long tokens, pinned to its
own core when there are two), each with its own client id so that the
server counts token calls per scenario:

* ``raw-100``: raw aiohttp, a token fetched once and set as a static
  session header, a pool of 100 connections (the throughput limit, and the
  base of every ratio; aiohttp's own pool queue lets a request starve).
* ``raw-unbounded``: the same with ``limit=0`` (no pool limit).
* ``one-line``: a bare one-line aiohttp middleware that sets the header
  (pool 100): the least any middleware costs.
* ``lock-per-request``: the naive middleware of :mod:`benchmarks.peers`,
  an ``asyncio.Lock`` around every token check (pool 100).
* ``aiopay``: ``tokens.session(holder, limit=100)``, as documented.
* ``aiopay-own``: the user's own ``aiohttp.ClientSession`` (pool 100) with
  ``middlewares=[FairPool(), tokens.middleware(holder)]``.
* ``azure-core``: ``AsyncBearerTokenCredentialPolicy`` in an
  ``AsyncPipeline`` over ``AioHttpTransport`` (pool 100), as in
  :mod:`benchmarks.peers`.

At each concurrency level, every client is warmed up, then each rotation
sends one batch of a fixed number of ``GET /api/payments`` (body read) from
*concurrency* looping workers through each client, in a balanced rotating
order (:func:`~benchmarks.rotations.rotation_order`). Throughput (requests
answered 200 per second) and client CPU per request
(``time.process_time()`` around the batch) are judged on the median over
rotations of each batch's ratio to the ``raw-100`` batch of the same
rotation, with the interquartile range. Latency (the pool wait included) is
pooled over a scenario's batches. The server's count of 401s is read around
each batch, so it is the batch's own.

The whole pass runs on the asyncio event loop, then again on uvloop's when
uvloop is installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import importlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs

from aiopay_auth import FairPool

from .peers import open_azure, open_lock_per_request
from .rotations import (
    Batches,
    latency_ms,
    paired_ratios,
    quartiles,
    rotation_order,
    spread_note,
    targets_table,
    unsettled,
)
from .rotations import iqr_text as _iqr
from .rotations import ms_text as _ms
from .rotations import target as _target
from .scenarios import (
    Client,
    Opener,
    aiohttp_pool,
    aiohttp_sender,
    drive,
    fetch_token,
    open_aiopay,
    open_baseline,
    recorded_holder,
)
from .server import CLIENT_SECRET, LIFETIMES, Endpoint, ServerProcess


uvloop: ModuleType | None
try:
    uvloop = importlib.import_module("uvloop")
except ImportError:  # the bench dependency group installs it; without it, asyncio only
    uvloop = None


THROUGHPUT_TARGET = 1.00
"""Paired throughput of ``aiopay`` at least this times ``raw-100`` …"""
THROUGHPUT_FROM = 256
"""… at every concurrency from this level up …"""
FAIRNESS_LIMIT = 5.0
"""… while its longest request takes at most this times its p99 (every request served) …"""
CPU_TARGET = 1.02
"""Paired client CPU per request of ``aiopay`` at most this times ``raw-100``, at every level."""

LOOPS_COUNTED = "asyncio"
"""The event loop :mod:`benchmarks.instructions` counts on."""
BASE = "raw-100"
OURS = "aiopay"
OWN = "aiopay-own"
"""The other way to use aiopay_auth on aiohttp: judged by the same targets as ``aiopay``."""
PEERS = ("lock-per-request", "azure-core")
"""The aiohttp-based peers here: ``aiopay`` is to be ahead of each, rotation by rotation."""
SERVER = "long"


@dataclass(frozen=True)
class PairedConfig:
    """What the paired section runs."""

    concurrency: tuple[int, ...] = (64, 256, 1024, 4096)
    batch: int = 2_000
    """Requests per batch, at least …"""
    batch_per_worker: int = 2
    """… this many per worker, so that every worker loops at the highest levels."""
    rotations: int = 14
    """Rotations per level: 14 is one balanced square for seven scenarios
    (:func:`~benchmarks.rotations.rotation_order`)."""
    warmup: int = 200
    """Requests each client sends at *pool* concurrency before a level's first rotation."""
    pool: int = 100
    max_seconds: float = 60.0
    """Time bound of one batch (a harness guard, not expected to be hit)."""
    loops: tuple[str, ...] = ("asyncio", "uvloop")
    """Event loops to run the whole pass on (uvloop only when it is installed)."""

    def batch_at(self, concurrency: int) -> int:
        return max(self.batch, self.batch_per_worker * concurrency)


FULL_PAIRED = PairedConfig()
QUICK_PAIRED = PairedConfig(concurrency=(64, 256), batch=300, rotations=3, warmup=100)


# --- the scenarios -------------------------------------------------------------------


@asynccontextmanager
async def open_raw_unbounded(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """Raw aiohttp with a static header and no pool limit (``limit=0``); *limit* unused."""
    async with open_baseline(endpoint, 0) as client:
        yield client


@asynccontextmanager
async def open_one_line(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """A bare middleware whose one line sets a token fetched once up front."""
    async with aiohttp.ClientSession() as token_session:
        token, _ = await fetch_token(token_session, endpoint)
    header = "Bearer " + token

    async def stamp(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        request.headers[hdrs.AUTHORIZATION] = header
        return await handler(request)

    async with aiohttp.ClientSession(connector=aiohttp_pool(limit), middlewares=[stamp]) as http:
        yield Client(aiohttp_sender(http, endpoint))


@asynccontextmanager
async def open_aiopay_own(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """The user's own session: ``middlewares=[FairPool(), tokens.middleware(holder)]``."""
    async with (
        recorded_holder(endpoint) as rec,
        aiohttp.ClientSession(
            connector=aiohttp_pool(limit),
            middlewares=[FairPool(), rec.tokens.middleware(rec.holder)],
        ) as http,
    ):
        yield Client(aiohttp_sender(http, endpoint), fetches=rec.log, holder=rec.holder)


@dataclass(frozen=True)
class PairedScenario:
    name: str
    label: str
    open: Opener


SCENARIOS: tuple[PairedScenario, ...] = (
    PairedScenario(BASE, "raw aiohttp, static header, pool 100 (the limit)", open_baseline),
    PairedScenario("raw-unbounded", "raw aiohttp, static header, limit=0", open_raw_unbounded),
    PairedScenario("one-line", "a bare one-line middleware that sets the header", open_one_line),
    PairedScenario(
        "lock-per-request", "naive middleware, asyncio.Lock on every request", open_lock_per_request
    ),
    PairedScenario(OURS, "aiopay_auth tokens.session(holder, limit=100)", open_aiopay),
    PairedScenario(
        "aiopay-own", "own ClientSession, [FairPool(), tokens.middleware(holder)]", open_aiopay_own
    ),
    PairedScenario(
        "azure-core", "azure-core AsyncBearerTokenCredentialPolicy (AioHttpTransport)", open_azure
    ),
)


def available_loops(cfg: PairedConfig) -> tuple[str, ...]:
    """The configured event loops that can run here."""
    return tuple(name for name in cfg.loops if name != "uvloop" or uvloop is not None)


def client_id(loop: str, name: str) -> str:
    """The client id a scenario uses on an event loop, so that the server counts each apart."""
    return f"pr-{loop}-{name}"


def servers() -> dict[str, float]:
    """The fake provider this section needs (the main section's day-long one)."""
    return {SERVER: LIFETIMES[SERVER]}


def clients(cfg: PairedConfig) -> list[tuple[str, str]]:
    """The client ids (one per scenario and event loop) the provider must accept."""
    return [(client_id(loop, s.name), CLIENT_SECRET) for loop in cfg.loops for s in SCENARIOS]


# --- one pass: every level, on one event loop ------------------------------------------


def _rows(
    batches: dict[str, Batches], token_calls: dict[str, int], cfg: PairedConfig, level: int
) -> dict[str, Any]:
    base = batches[BASE]
    rows = {}
    for s in SCENARIOS:
        b = batches[s.name]
        lat = latency_ms(b.latencies)
        p99, worst = lat["p99"], lat["max"]
        rows[s.name] = {
            "label": s.label,
            "batch": cfg.batch_at(level),
            "rps": quartiles(b.rps),
            "rps_ratio": paired_ratios(b.rps, base.rps),
            "cpu_us_per_request": quartiles(b.cpu_us),
            "cpu_ratio": paired_ratios(b.cpu_us, base.cpu_us),
            "latency_ms": lat,
            "max_over_p99": worst / p99 if worst is not None and p99 else None,
            "requests": len(b.latencies),
            "statuses": dict(b.statuses),
            "status_401": b.statuses.get("401", 0),
            "errors": sum(n for k, n in b.statuses.items() if k not in ("200", "401")),
            "server_unauthorized": b.unauthorized,
            "server_expired": b.expired,
            "token_calls": token_calls.get(s.name, 0),
            "batch_wall_s": b.wall_s,
            "batches_cut": b.timed_out,
            "per_rotation": {"rps": b.rps, "cpu_us": b.cpu_us, "p99_ms": b.p99_ms},
        }
    return rows


async def _pass(
    server: ServerProcess, cfg: PairedConfig, loop_name: str, progress: bool
) -> dict[str, Any]:
    names = [s.name for s in SCENARIOS]
    levels: dict[str, Any] = {}
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        opened: dict[str, Client] = {}
        for s in SCENARIOS:
            endpoint = dataclasses.replace(
                server.endpoints[SERVER], client_id=client_id(loop_name, s.name)
            )
            opened[s.name] = await stack.enter_async_context(s.open(endpoint, cfg.pool))
        for level in cfg.concurrency:
            level_started = time.perf_counter()
            calls_before = dict(server.client_stats(SERVER).token_calls_by_client)
            for name in names:  # warm-up: fill each pool, touch each code path
                await drive(
                    opened[name].send,
                    requests=cfg.warmup,
                    concurrency=min(level, cfg.pool),
                    timeout=cfg.max_seconds,
                )
            batches = {name: Batches() for name in names}
            for rotation in range(cfg.rotations):
                for name in rotation_order(names, rotation):
                    gc.collect()
                    before = server.stats(SERVER)
                    loop = await drive(
                        opened[name].send,
                        requests=cfg.batch_at(level),
                        concurrency=level,
                        timeout=cfg.max_seconds,
                    )
                    batches[name].add(loop, server.stats(SERVER) - before)
                if progress:
                    line = "  ".join(f"{n} {batches[n].rps[-1]:,.0f}" for n in names)
                    print(
                        f"paired {loop_name} c={level} rotation {rotation + 1}/{cfg.rotations}  "
                        f"req/s  {line}",
                        flush=True,
                    )
            calls_after = server.client_stats(SERVER).token_calls_by_client
            ids = {name: client_id(loop_name, name) for name in names}
            token_calls = {
                name: calls_after.get(cid, 0) - calls_before.get(cid, 0)
                for name, cid in ids.items()
            }
            levels[str(level)] = {
                "rows": _rows(batches, token_calls, cfg, level),
                "elapsed_s": time.perf_counter() - level_started,
            }
    setup_calls = server.client_stats(SERVER).token_calls_by_client
    return {
        "levels": levels,
        "token_calls_whole_pass": {n: setup_calls.get(client_id(loop_name, n), 0) for n in names},
        "elapsed_s": time.perf_counter() - started,
    }


def _run_on(
    loop_name: str, main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run *main()* to completion on a new event loop of the kind *loop_name* names."""
    if loop_name == "uvloop":
        assert uvloop is not None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def run_paired(
    cfg: PairedConfig,
    *,
    pin: bool = True,
    progress: bool = True,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """Run the paired passes (one per available event loop) and return the figures.

    Against *server* when given (started with :func:`servers` and
    :func:`clients` among its own), else against a fake provider started
    for this section alone.
    """
    started = time.time()
    load_at_start = os.getloadavg()
    loops = available_loops(cfg)

    def passes(srv: ServerProcess) -> dict[str, Any]:
        out = {}
        for name in loops:
            out[name] = _run_on(name, functools.partial(_pass, srv, cfg, name, progress))
        return out

    if server is None:
        with ServerProcess(pin=pin, lifetimes=servers(), clients=clients(cfg)) as own:
            by_loop = passes(own)
            pinned = own.pinned
    else:
        by_loop = passes(server)
        pinned = server.pinned
    return {
        "config": asdict(cfg),
        "pinned": pinned,
        "uvloop": None if uvloop is None else uvloop.__version__,
        "duration_s": time.time() - started,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "loops": by_loop,
    }


# --- verdicts and markdown ------------------------------------------------------------


def _spread_text(spread: float | None) -> str:
    return "n/a" if spread is None else format(spread, ".1f")


def _q(q: dict[str, float], spec: str = ".3f") -> str:
    return f"{format(q['median'], spec)} (IQR {format(q['q1'], spec)}-{format(q['q3'], spec)})"


def _paired_target(  # noqa: PLR0917 - one row's figures, all needed
    kind: str,
    loop_name: str,
    level: str,
    name: str,
    measured: str,
    limit: str,
    passed: bool,
    why: str,
) -> dict[str, Any]:
    """One paired target; its scope names the scenario when it is not ``aiopay``.

    The row also carries ``loop``, ``level`` and ``scenario``, which the
    report reads to add the separate runs' and the instruction counts'
    figures (rather than parse the scope back).
    """
    scope = f"{loop_name}, c={level}" if name == OURS else f"{loop_name}, c={level}, {name}"
    row = _target(kind, scope, measured, limit, passed, why=why)
    return row | {"loop": loop_name, "level": level, "scenario": name}


def throughput_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``aiopay`` and ``aiopay-own`` at least 1.00 x raw-100 (paired) at every level >= 256,
    fair and fresh."""
    out = []
    for name in (OURS, OWN):
        for loop_name, result in doc["loops"].items():
            for level, data in result["levels"].items():
                if int(level) < THROUGHPUT_FROM:
                    continue
                row, base = data["rows"][name], data["rows"][BASE]
                ratio, spread = row["rps_ratio"]["median"], row["max_over_p99"]
                unauthorized = max(row["status_401"], row["server_unauthorized"])
                fair = spread is not None and spread <= FAIRNESS_LIMIT
                why = []
                if ratio < THROUGHPUT_TARGET:
                    why.append(
                        f"`{name}` {ratio:.3f} x raw-100: "
                        + spread_note(row["rps_ratio"], THROUGHPUT_TARGET, above_fails=False)
                        + f" Its client CPU per request in the same batches: "
                        f"{_q(row['cpu_ratio'])} x raw-100."
                    )
                if not fair:
                    why.append(f"max latency {_spread_text(spread)} x p99.")
                if unauthorized:
                    why.append(f"{unauthorized} requests answered 401.")
                out.append(
                    _paired_target(
                        "throughput, fair and fresh (paired)",
                        loop_name,
                        level,
                        name,
                        f"{_q(row['rps_ratio'])} x raw-100"
                        f"{unsettled(row['rps_ratio'], THROUGHPUT_TARGET)}; max latency "
                        f"{_spread_text(spread)} x p99 (raw-100: "
                        f"{_spread_text(base['max_over_p99'])}); {unauthorized} 401s",
                        f">= {THROUGHPUT_TARGET:.2f} x, max <= {FAIRNESS_LIMIT:g} x p99, 0 401s",
                        ratio >= THROUGHPUT_TARGET and fair and unauthorized == 0,
                        " ".join(why),
                    )
                )
    return out


def cpu_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``aiopay``'s and ``aiopay-own``'s client CPU per request at most 1.02 x raw-100
    (paired), every level."""
    out = []
    for name in (OURS, OWN):
        for loop_name, result in doc["loops"].items():
            for level, data in result["levels"].items():
                row = data["rows"][name]
                out.append(
                    _paired_target(
                        "client CPU per request (paired)",
                        loop_name,
                        level,
                        name,
                        f"{_q(row['cpu_ratio'])} x raw-100"
                        + unsettled(row["cpu_ratio"], CPU_TARGET),
                        f"<= {CPU_TARGET:.2f} x",
                        row["cpu_ratio"]["median"] <= CPU_TARGET,
                        f"`{name}` {row['cpu_ratio']['median']:.3f} x raw-100: "
                        + spread_note(row["cpu_ratio"], CPU_TARGET, above_fails=True),
                    )
                )
    return out


def ahead_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``aiopay`` ahead of every aiohttp-based peer: per-rotation ratios, every level.

    The verdict names the closest peer (the lowest median ratio); the
    others follow. Passed when every peer's median is above 1.
    """
    out = []
    for loop_name, result in doc["loops"].items():
        for level, data in result["levels"].items():
            rows = data["rows"]
            mine = rows[OURS]["per_rotation"]["rps"]
            versus = {
                peer: paired_ratios(mine, rows[peer]["per_rotation"]["rps"])
                for peer in PEERS
                if peer in rows
            }
            if not versus:
                continue
            ordered = sorted(versus.items(), key=lambda kv: kv[1]["median"])
            (closest, q), others = ordered[0], ordered[1:]
            rest = "".join(f"; {peer} {v['median']:.2f} x" for peer, v in others)
            out.append(
                _paired_target(
                    "ahead of every peer (paired)",
                    loop_name,
                    level,
                    OURS,
                    f"closest: {closest}, aiopay {_q(q)} x its req/s{unsettled(q, 1.0)}{rest}",
                    "> 1.00 x every peer",
                    all(v["median"] > 1 for v in versus.values()),
                    f"closest peer {closest}: " + spread_note(q, 1.0, above_fails=False),
                )
            )
    return out


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return throughput_targets(doc) + cpu_targets(doc) + ahead_targets(doc)


def build(results: dict[str, Any]) -> dict[str, Any]:
    """The section's document: the figures and the judged targets."""
    return {**results, "targets": targets(results)}


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's lines, for the report and ``docs/benchmarks.md``."""
    cfg, load = doc["config"], doc["load_average"]
    loops = ", ".join(f"`{name}`" for name in doc["loops"])
    uv = (
        f"uvloop {doc['uvloop']}"
        if doc["uvloop"]
        else "uvloop is not installed here, so only asyncio ran"
    )
    lines = [
        "## Paired (aiohttp)",
        "",
        "**These figures are paired.** Every aiohttp-based client is opened once, side by "
        "side in one process, against the same fake provider as the separate runs (day-long "
        "tokens, pinned to its own core), each with its own client id: `raw-100` (raw "
        "aiohttp, a static `Authorization` session header, a pool of "
        f"{cfg['pool']}: the throughput limit and the base of every ratio), `raw-unbounded` "
        "(the same with `limit=0`), `one-line` (a bare middleware whose one line sets the "
        "header), `lock-per-request` (an `asyncio.Lock` around every token check), `aiopay` "
        f"(`tokens.session(holder, limit={cfg['pool']})`), `aiopay-own` (the user's own "
        "`ClientSession` with `middlewares=[FairPool(), tokens.middleware(holder)]`) and "
        "`azure-core` (`AsyncBearerTokenCredentialPolicy` over `AioHttpTransport`). At each "
        f"concurrency, each client is warmed up with {cfg['warmup']} requests, then each of "
        f"{cfg['rotations']} rotations sends one batch of max({cfg['batch']:,}, "
        f"{cfg['batch_per_worker']} x concurrency) `GET /api/payments` from as many looping "
        "workers as the level says through each client, in a balanced rotating order (each "
        "client in every place, and after every other client, equally often over the "
        "rotations), so that the machine's noise falls on each alike. *x raw-100* is the "
        "median over "
        "rotations of each batch's ratio to the `raw-100` batch of the same rotation "
        "[interquartile range]; req/s (answered 200) and CPU µs per request "
        "(`time.process_time()` around a batch) are medians [IQR] over batches and carry the "
        "machine's noise. Latency is pooled over a scenario's batches at that level (not "
        "paired), the pool wait included; *max / p99* tells whether any request was starved. "
        "*401s* are the server's count during the scenario's batches; *token calls* the "
        "server's count for its client id over the level (warm-up included; a client that "
        "fetched its day-long token when it was opened, before the first level, shows 0). "
        f"Event loops: {loops} ({uv}). Run alone with `python -m benchmarks --paired`: "
        f"{doc['duration_s']:.0f} s here, load average (`uptime`) {load['start'][0]:.2f} at "
        f"the start and {load['end'][0]:.2f} at the end (other work shares the machine).",
        "",
        "| loop | concurrency | scenario | req/s | x raw-100 | CPU µs/req | x raw-100 CPU | "
        "p50 / p99 / max ms | max / p99 | 401s | token calls | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for loop_name, result in doc["loops"].items():
        for level, data in result["levels"].items():
            for name, row in data["rows"].items():
                lat = row["latency_ms"]
                spread = row["max_over_p99"]
                cut = f" ({row['batches_cut']} cut)" if row["batches_cut"] else ""
                lines.append(
                    f"| {loop_name} | {level} | {name} | {_iqr(row['rps'], ',.0f')} | "
                    f"{_iqr(row['rps_ratio'], '.3f')} | "
                    f"{_iqr(row['cpu_us_per_request'], '.0f')} | "
                    f"{_iqr(row['cpu_ratio'], '.3f')} | "
                    f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} | "
                    f"{'n/a' if spread is None else format(spread, '.1f')} | "
                    f"{max(row['status_401'], row['server_unauthorized'])} | "
                    f"{row['token_calls']} | {row['errors']}{cut} |"
                )
    lines += [
        "",
        f"Targets on these paired figures, for `aiopay` and `aiopay-own` (the two ways to "
        f"use aiopay_auth on aiohttp): at least {THROUGHPUT_TARGET:.2f} x "
        f"`raw-100` at every concurrency from {THROUGHPUT_FROM} up, while serving every "
        f"request fairly (max latency at most {FAIRNESS_LIMIT:g} x p99) and fresh (0 401s); "
        f"client CPU per request at most {CPU_TARGET:.2f} x `raw-100` at every concurrency. "
        "And `aiopay` ahead of every aiohttp-based peer (`lock-per-request`, `azure-core`) at "
        "every concurrency: the median over rotations of its batch's req/s over the peer's "
        "batch of the same rotation above 1.",
        "",
        *targets_table(doc["targets"], "measured (median (IQR) of per-rotation ratios)"),
    ]
    lines.append("")
    return lines
