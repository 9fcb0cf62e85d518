"""The traps: where a token kept fresh on paper goes out expired, or a request starves.

Three looping runs, each scenario on its own for a fixed time (not paired:
what is judged are counts and the worst requests, not ratios), against
fake providers in a child process (:class:`~aiopay_auth.testing.FakeProvider`,
which refuses a token from the instant ``expires_in`` says it expires):

* **The pool trap.** A pool of 100 connections, 256 looping workers and
  2-second tokens for 10 s, once with the token endpoint answering at once
  and once holding every token request 100 ms. Requests queue for a pooled
  connection after their middleware stamped them, and a refresh comes due
  every second or so. Scenarios: ``aiopay`` (``tokens.session(holder,
  limit=100)``), ``background-refresh`` (a task renews a shared token
  before expiry, a plain middleware stamps it: nothing stops a stamped
  request from queueing past its token's expiry), ``lock-per-request``
  (an ``asyncio.Lock`` around every check, refreshing inline) and
  ``azure-core`` (``AsyncBearerTokenCredentialPolicy`` with a credential
  that returns ``AccessTokenInfo`` with ``refresh_on``). Each has its own
  client id, so the server counts its token calls; 401s are the server's
  count during the timed run; latency is split into requests answered
  within ±100 ms of a token's publication (the refresh windows) and the
  others, as the main section's refresh windows are.
* **Refresh windows by token lifetime.** ``aiopay`` on the same pool with
  1-second and 1-hour tokens (a 1-hour token is not refreshed within a
  bounded run: its latency is the no-refresh reference).
* **The fairness trap.** A pool of 20 connections and 60 looping workers
  (day-long tokens): aiohttp's own pool queue lets a request that arrives
  as a connection frees take it ahead of those already waiting. The
  longest request (its wait for a pooled connection included; the server
  answers at once) against p99, raw aiohttp against ``aiopay``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .peers import open_azure, open_background_refresh, open_lock_per_request
from .rotations import latency_ms, split_by_refresh, targets_table
from .rotations import ms_text as _ms
from .rotations import target as _target
from .scenarios import Opener, drive, open_aiopay, open_baseline
from .server import CLIENT_SECRET, LIFETIMES, ServerProcess


FAIRNESS_LIMIT = 5.0
"""Fair: the longest request takes at most this times the p99."""
OURS = "aiopay"
_HOUR = 3_600.0
_EVERYTHING = 10**9  # a looping run: bounded by time, never by count


@dataclass(frozen=True)
class TrapsConfig:
    """What the traps section runs."""

    pool: int = 100
    workers: int = 256
    seconds: float = 10.0
    """Length of each timed looping run."""
    lifetime: float = 2.0
    """Token lifetime of the pool trap, in seconds."""
    delays: tuple[float, ...] = (0.0, 0.1)
    """Seconds the token endpoint holds each token request, one pool trap each."""
    window_lifetimes: tuple[float, ...] = (1.0, _HOUR)
    warmup: int = 200
    """Requests at *pool* concurrency before each timed run."""
    fair_pool: int = 20
    fair_workers: int = 60
    fair_seconds: float = 10.0
    guard: float = 60.0
    """Extra seconds after the run's time before the harness cuts it."""


FULL_TRAPS = TrapsConfig()
QUICK_TRAPS = TrapsConfig(seconds=1.0, fair_seconds=1.0, warmup=100, window_lifetimes=())


@dataclass(frozen=True)
class TrapScenario:
    name: str
    label: str
    open: Opener


SCENARIOS: tuple[TrapScenario, ...] = (
    TrapScenario(OURS, "aiopay_auth tokens.session(holder, limit=100)", open_aiopay),
    TrapScenario(
        "background-refresh",
        "a task renews a shared token before expiry; a plain middleware stamps it",
        open_background_refresh,
    ),
    TrapScenario(
        "lock-per-request", "naive middleware, asyncio.Lock on every request", open_lock_per_request
    ),
    TrapScenario(
        "azure-core",
        "azure-core AsyncBearerTokenCredentialPolicy, AccessTokenInfo with refresh_on",
        functools.partial(open_azure, refresh_on=True),
    ),
)
FAIR: tuple[TrapScenario, ...] = (
    TrapScenario("raw", "raw aiohttp, static header, pool 20", open_baseline),
    TrapScenario(OURS, "aiopay_auth tokens.session(holder, limit=20)", open_aiopay),
)
FAIR_SERVER = "long"


def _trap_server(delay: float) -> str:
    return f"trap-{delay * 1e3:g}ms"


def _window_server(lifetime: float) -> str:
    return f"window-{lifetime:g}s"


def servers(cfg: TrapsConfig) -> dict[str, float]:
    """The fake providers this section needs, and their tokens' lifetimes."""
    return {
        **{_trap_server(d): cfg.lifetime for d in cfg.delays},
        **{_window_server(t): t for t in cfg.window_lifetimes},
        FAIR_SERVER: LIFETIMES[FAIR_SERVER],
    }


def token_delays(cfg: TrapsConfig) -> dict[str, float]:
    """How long each of this section's servers holds a token request."""
    return {_trap_server(d): d for d in cfg.delays}


def _client_id(name: str) -> str:
    return f"trap-{name}"


def clients() -> list[tuple[str, str]]:
    """The client ids (one per scenario) the providers must accept."""
    return [(_client_id(s.name), CLIENT_SECRET) for s in SCENARIOS]


# --- one timed looping run -------------------------------------------------------------


async def _timed(
    server: ServerProcess,
    srv: str,
    scenario: TrapScenario,
    *,
    pool: int,
    workers: int,
    seconds: float,
    cfg: TrapsConfig,
    own_id: bool = True,
) -> dict[str, Any]:
    """Open *scenario* on server *srv*, warm it up, loop *workers* workers for *seconds*."""
    endpoint = server.endpoints[srv]
    if own_id:
        endpoint = dataclasses.replace(endpoint, client_id=_client_id(scenario.name))
    cid = endpoint.client_id
    calls_before = server.client_stats(srv).token_calls_by_client.get(cid, 0)
    gc.collect()
    async with scenario.open(endpoint, pool) as client:
        await drive(
            client.send, requests=cfg.warmup, concurrency=min(pool, workers), timeout=cfg.guard
        )
        before = server.stats(srv)
        loop = await drive(
            client.send,
            requests=_EVERYTHING,
            concurrency=workers,
            timeout=seconds + cfg.guard,
            stop_after=seconds,
        )
        during = server.stats(srv) - before
    # Counted once the client is closed: a fetch in flight at the end is then done or cancelled.
    calls = server.client_stats(srv).token_calls_by_client.get(cid, 0) - calls_before
    log = client.fetches
    # The first publication is the first token, fetched before the timed run.
    refreshes = log.published[1:] if log is not None else []
    near, far, in_run = split_by_refresh(loop, refreshes)
    published = len(log.published) if log is not None else None
    return {
        "label": scenario.label,
        "seconds": loop.wall,
        "requests": loop.completed,
        "rps": loop.ok / loop.wall,
        "statuses": dict(loop.statuses),
        "client_401": loop.statuses.get("401", 0),
        "errors": sum(n for k, n in loop.statuses.items() if k not in ("200", "401")),
        "cut": loop.timed_out,
        "server_401": during.api_unauthorized,
        "server_expired": during.api_expired,
        "token_calls": calls if own_id else None,
        "publications": published,
        "fetches_failed": log.failed if log is not None else None,
        "fetches_cancelled": log.cancelled if log is not None else None,
        "refreshes_in_run": in_run,
        "latency_ms": latency_ms(loop.latencies),
        "window_ms": latency_ms(near) | {"count": len(near)},
        "steady_ms": latency_ms(far) | {"count": len(far)},
    }


def _announce(what: str, row: dict[str, Any]) -> None:
    lat = row["latency_ms"]
    print(
        f"  {what:<44} {row['rps']:>7,.0f} req/s  p99 {_ms(lat['p99'])} ms  "
        f"max {_ms(lat['max'])} ms  401s {row['server_401']}  token calls "
        f"{row['token_calls'] if row['token_calls'] is not None else '-'}",
        flush=True,
    )


async def _section(server: ServerProcess, cfg: TrapsConfig, progress: bool) -> dict[str, Any]:
    pool_trap: dict[str, dict[str, Any]] = {}
    for delay in cfg.delays:
        srv = _trap_server(delay)
        rows = pool_trap[f"{delay * 1e3:g}"] = {}
        for s in SCENARIOS:
            rows[s.name] = await _timed(
                server, srv, s, pool=cfg.pool, workers=cfg.workers, seconds=cfg.seconds, cfg=cfg
            )
            if progress:
                _announce(f"pool trap, token delay {delay * 1e3:g} ms, {s.name}", rows[s.name])
    windows: dict[str, dict[str, Any]] = {}
    for lifetime in cfg.window_lifetimes:
        windows[f"{lifetime:g}"] = row = await _timed(
            server,
            _window_server(lifetime),
            SCENARIOS[0],
            pool=cfg.pool,
            workers=cfg.workers,
            seconds=cfg.seconds,
            cfg=cfg,
        )
        if progress:
            _announce(f"refresh windows, {lifetime:g}-s tokens, {OURS}", row)
    fair: dict[str, dict[str, Any]] = {}
    for s in FAIR:
        fair[s.name] = await _timed(
            server,
            FAIR_SERVER,
            s,
            pool=cfg.fair_pool,
            workers=cfg.fair_workers,
            seconds=cfg.fair_seconds,
            cfg=cfg,
            own_id=False,
        )
        if progress:
            _announce(f"fairness trap, {s.name}", fair[s.name])
    return {"pool_trap": pool_trap, "windows": windows, "fairness": fair}


def run_traps(
    cfg: TrapsConfig,
    *,
    pin: bool = True,
    progress: bool = True,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """Run the traps and return the figures.

    Against *server* when given (started with :func:`servers`,
    :func:`token_delays` and :func:`clients` among its own), else against
    fake providers started for this section alone.
    """
    started = time.time()
    load_at_start = os.getloadavg()
    if server is None:
        with ServerProcess(
            pin=pin, lifetimes=servers(cfg), clients=clients(), token_delays=token_delays(cfg)
        ) as own:
            figures = asyncio.run(_section(own, cfg, progress))
            pinned = own.pinned
    else:
        figures = asyncio.run(_section(server, cfg, progress))
        pinned = server.pinned
    return {
        "config": asdict(cfg),
        "pinned": pinned,
        "duration_s": time.time() - started,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        **figures,
    }


# --- verdicts and markdown ---------------------------------------------------------------


def exact_calls(row: Mapping[str, Any]) -> bool:
    """One token call per published token: a fetch cancelled at close may add one call."""
    published: int = row["publications"]
    calls: int = row["token_calls"]
    cancelled: int = row["fetches_cancelled"] or 0
    return row["fetches_failed"] == 0 and published <= calls <= published + cancelled


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """0 401s in the pool trap, one token call per refresh, fairness."""
    out = []
    for delay, rows in doc["pool_trap"].items():
        ours = rows[OURS]
        others = ", ".join(
            f"{name} {row['server_401']:,}" for name, row in rows.items() if name != OURS
        )
        missed = [name for name, row in rows.items() if name != OURS and row["server_401"] == 0]
        why = []
        if ours["server_401"]:
            why.append(f"{OURS} got {ours['server_401']:,} 401s.")
        if missed:
            why.append(
                f"The trap did not catch {', '.join(missed)} (0 401s): for "
                f"{'it' if len(missed) == 1 else 'them'} the premise does not hold, whatever "
                f"{OURS}'s own count ({ours['server_401']:,})."
            )
        out.append(
            _target(
                "0 401s in the pool trap where every other scenario has them",
                f"token endpoint +{delay} ms",
                f"{OURS} {ours['server_401']:,} 401s; others: {others} "
                f"({len(rows) - 1 - len(missed)} of {len(rows) - 1} caught)",
                f"0 for {OURS}, > 0 for every other",
                ours["server_401"] == 0 and not missed,
                why=" ".join(why),
            )
        )
    for delay, rows in doc["pool_trap"].items():
        ours = rows[OURS]
        out.append(
            _target(
                "exactly one token call per refresh (pool trap)",
                f"token endpoint +{delay} ms",
                f"{ours['token_calls']} calls / {ours['publications']} tokens published "
                f"({ours['fetches_cancelled']} cancelled at close, "
                f"{ours['fetches_failed']} failed)",
                "calls = publications (+ a fetch cancelled at close)",
                exact_calls(ours),
            )
        )
    cfg = doc["config"]
    for name, row in doc["fairness"].items():
        lat = row["latency_ms"]
        spread = lat["max"] / lat["p99"] if lat["max"] is not None and lat["p99"] else None
        out.append(
            _target(
                "fair: max latency <= 5 x p99 (fairness trap)"
                + ("" if name == OURS else ", context"),
                f"{name}, pool {cfg['fair_pool']}, {cfg['fair_workers']} workers",
                f"max {_ms(lat['max'])} ms, p99 {_ms(lat['p99'])} ms: "
                f"{'n/a' if spread is None else format(spread, '.1f')} x",
                f"<= {FAIRNESS_LIMIT:g} x" if name == OURS else "not judged",
                (spread is not None and spread <= FAIRNESS_LIMIT) if name == OURS else None,
            )
        )
    return out


def build(results: dict[str, Any]) -> dict[str, Any]:
    """The section's document: the figures and the judged targets."""
    return {**results, "targets": targets(results)}


def _lat(x: Mapping[str, float | None]) -> str:
    return f"{_ms(x['p50'])} / {_ms(x['p99'])} / {_ms(x['max'])}"


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's lines, for the report and ``docs/benchmarks.md``."""
    cfg, load = doc["config"], doc["load_average"]
    lines = [
        "## Traps",
        "",
        "Where a token kept fresh on paper goes out expired, or a request waits behind "
        "others without end. **Not paired:** each scenario loops on its own for a fixed "
        "time, one after another, and what is judged are counts (401s, token calls) and "
        "the worst requests, which machine noise does not turn into 401s. Fake providers "
        "in a child process (pinned to its own core) refuse a token from the instant its "
        "`expires_in` says it expires. Run alone with `python -m benchmarks --traps`: "
        f"{doc['duration_s']:.0f} s here, load average (`uptime`) {load['start'][0]:.2f} at "
        f"the start and {load['end'][0]:.2f} at the end (other work shares the machine).",
        "",
        f"**The pool trap.** A pool of {cfg['pool']} connections, {cfg['workers']} looping "
        f"workers and {cfg['lifetime']:g}-second tokens for {cfg['seconds']:g} s (after "
        f"{cfg['warmup']} warm-up requests), once with the token endpoint answering at once "
        "and once holding every token request "
        + " and ".join(f"{d * 1e3:g} ms" for d in cfg["delays"] if d)
        + ". More workers than connections means requests queue for a connection after "
        "their middleware stamped them, while a refresh comes due about every second. "
        "`aiopay`: `tokens.session(holder, limit=100)`; `background-refresh`: a task renews "
        "a shared token at half its life, a plain middleware stamps it (no admission gate); "
        "`lock-per-request`: an `asyncio.Lock` around every check, refreshing inline; "
        "`azure-core`: `AsyncBearerTokenCredentialPolicy` with a credential returning "
        "`AccessTokenInfo` whose `refresh_on` is half the life (whole Unix seconds, as the "
        "type has them; the policy adds up to 60 s of random jitter to `refresh_on`, capped "
        "at `expires_on`, so a short token is renewed, inline under its lock, once its "
        "whole-second `expires_on` has passed). *401s* are the server's count during the "
        "timed run (a client that resends after a 401 may still report 200; *client 401s* "
        "is what callers saw); "
        "*token calls* the server's count for the scenario's client id, open to close; "
        "*window* requests were answered within ±100 ms of a token's publication, *steady* "
        "ones outside.",
        "",
        "| token endpoint | scenario | req/s | 401s (client 401s) | expired | token calls / "
        "tokens | refreshes in run | window p50 / p99 / max ms | steady p50 / p99 / max ms | "
        "max ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for delay, rows in doc["pool_trap"].items():
        for name, row in rows.items():
            cut = " (cut)" if row["cut"] else ""
            lines.append(
                f"| +{delay} ms | {name} | {row['rps']:,.0f} | {row['server_401']:,} "
                f"({row['client_401']:,}) | {row['server_expired']:,} | {row['token_calls']} / "
                f"{row['publications']} | {row['refreshes_in_run']} | "
                f"{_lat(row['window_ms'])} ({row['window_ms']['count']:,} req) | "
                f"{_lat(row['steady_ms'])} | {_ms(row['latency_ms']['max'])} | "
                f"{row['errors']}{cut} |"
            )
    lines += [
        "",
        "`aiopay` gives up one second of a whole-second `expires_in` of 2 or more (a server "
        "may have floored its issue time to the second; see [Faults](faults.md)), so it takes "
        "these 2-second tokens for 1 s and renews them about every half second: about twice "
        "the peers' token calls, each one a published token.",
    ]
    if doc["windows"]:
        lines += [
            "",
            "**Refresh windows by token lifetime.** `aiopay` on the same pool and workers, "
            "token endpoint answering at once, with tokens of "
            + " and ".join(f"{float(t):g} s" for t in doc["windows"])
            + ". A 1-hour token is refreshed five minutes before it expires, so a bounded run "
            "sees no refresh: its latency is the reference a refresh window is held to.",
            "",
            "| tokens | req/s | refreshes in run | window p50 / p99 / max ms | "
            "steady p50 / p99 / max ms | 401s |",
            "|---|---|---|---|---|---|",
        ]
        for lifetime, row in doc["windows"].items():
            lines.append(
                f"| {float(lifetime):g} s | {row['rps']:,.0f} | {row['refreshes_in_run']} | "
                f"{_lat(row['window_ms'])} ({row['window_ms']['count']:,} req) | "
                f"{_lat(row['steady_ms'])} | {row['server_401']} |"
            )
    lines += [
        "",
        f"**The fairness trap.** A pool of {cfg['fair_pool']} connections, "
        f"{cfg['fair_workers']} looping workers, day-long tokens, {cfg['fair_seconds']:g} s. "
        "aiohttp's own pool queue lets a request that arrives as a connection frees take it "
        "ahead of those already waiting; `FairPool` admits strictly in arrival order. The "
        "server answers at once, so a request's latency is mostly its wait for a connection.",
        "",
        "| scenario | req/s | p50 / p99 / max ms | max / p99 | 401s |",
        "|---|---|---|---|---|",
    ]
    for name, row in doc["fairness"].items():
        lat = row["latency_ms"]
        spread = lat["max"] / lat["p99"] if lat["max"] is not None and lat["p99"] else None
        lines.append(
            f"| {name} | {row['rps']:,.0f} | {_lat(lat)} | "
            f"{'n/a' if spread is None else format(spread, '.1f')} | {row['server_401']} |"
        )
    lines += ["", *targets_table(doc["targets"]), ""]
    return lines
