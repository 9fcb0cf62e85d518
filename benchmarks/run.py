"""Run the benchmark: ``python -m benchmarks [--quick] [--publish]``.

The fake providers run in a child process (:mod:`benchmarks.server`). For
each round, each concurrency level and each scenario in turn (A B C … A B C
…), one client is opened, warmed up (its pool filled), then sent a fixed
number of requests under a time bound. Then come a cold start, the paired
section (:mod:`benchmarks.paired`: every aiohttp-based scenario opened once
in one process, fixed-count batches in rotating order, judged on the median
of per-rotation ratios; ``--paired`` runs it alone), in a full run the
instruction counts (:mod:`benchmarks.instructions`: the same clients under
valgrind, when it is installed), the httpx section
(:mod:`benchmarks.httpx_section`: aiopay_auth's httpx adapter against
Authlib, httpx-auth and raw httpx, paired; ``--httpx`` runs it alone), the
traps (:mod:`benchmarks.traps`: the pool trap with 2-second tokens, refresh
windows by token lifetime, the fairness trap; ``--traps`` runs them alone),
the hot-path micro-benchmark, the memory check and the many-merchants
section (:mod:`benchmarks.tenants`; ``--tenants`` runs that section alone).
Results go to ``benchmarks/results/`` (JSON, a markdown table, PNG plots);
with ``--publish``, the table and plots also go to ``docs/``.

Exit status: 0 when every phase ran, whatever the numbers (the targets
are printed PASS/FAIL, not asserted); non-zero when the harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs

from . import httpx_section, instructions, paired, report, telemetry, tenants, traps
from .micro import run_micro_fresh, vmrss_kib
from .peers import PEERS
from .rotations import split_by_refresh
from .scenarios import (
    OURS,
    Client,
    FetchLog,
    Loop,
    Scenario,
    drive,
    open_aiopay,
    open_baseline,
)
from .server import LIFETIMES, Counters, ServerProcess


SCENARIOS: tuple[Scenario, ...] = (*OURS, *PEERS)
CHURN = ("aiopay-1s", "lock-per-request-1s")
"""The scenarios with 1-second tokens, whose refreshes are looked at closely."""

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    """What one benchmark run does."""

    mode: str
    rounds: int
    concurrency: tuple[int, ...]
    requests: int
    max_seconds: float
    pool: int
    cold_requests: int
    micro_loops: int
    micro_repeats: int
    micro_processes: int
    """Fresh processes the hot-path micro-benchmark runs in, one after another."""
    memory_requests: int
    scenarios: tuple[str, ...]
    busy_limit: float = 0.25
    """A run during which other processes used more than this share of a core is disturbed."""
    retries: int = 2
    """How often a disturbed run is repeated at once (the last attempt is kept)."""
    retry_budget: int = 25
    """Repeats allowed over the whole run, so a busy machine cannot stretch it much."""


FULL = Config(
    mode="full",
    rounds=5,
    concurrency=(64, 256, 1024, 4096),
    requests=8_000,
    max_seconds=4.0,
    pool=100,
    cold_requests=10_000,
    micro_loops=50_000,
    micro_repeats=10,
    micro_processes=5,
    memory_requests=1_000_000,
    scenarios=tuple(s.name for s in SCENARIOS),
)
QUICK = replace(
    FULL,
    mode="quick",
    rounds=1,
    concurrency=(64, 256),
    requests=3_000,
    max_seconds=2.0,
    micro_loops=20_000,
    micro_repeats=5,
    micro_processes=2,
    memory_requests=100_000,
    retries=1,
    retry_budget=4,
)


# --- one scenario run -------------------------------------------------------


@dataclass
class Latency:
    """Latency percentiles of a set of requests, in milliseconds."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0, None, None, None)
        ordered = sorted(seconds)

        def pct(q: float) -> float:
            index = max(0, math.ceil(q * len(ordered)) - 1)  # nearest rank
            return ordered[index] * 1e3

        return cls(len(ordered), pct(0.50), pct(0.99), ordered[-1] * 1e3)


@dataclass
class Run:
    """One scenario at one concurrency level in one round."""

    scenario: str
    kind: str
    round: int
    concurrency: int
    pool: int
    requests: int
    completed: int
    timed_out: bool
    wall_s: float
    rps: float
    """Requests answered 200 per second: a 401 or an error is not throughput."""
    completed_rps: float
    cpu_us_per_request: float
    client_cpu_util: float
    server_cpu_util: float
    others_cpu_util: float
    statuses: dict[str, int]
    latency: Latency
    counters_during_loop: Counters
    counters_client_lifetime: Counters
    tokens: dict[str, Any] | None = None
    rps_ratio: float | None = None
    cpu_ratio: float | None = None
    # The raw series, kept for the plots and the refresh windows (not in the JSON).
    loop: Loop | None = field(default=None, repr=False)
    publications: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("loop")
        data.pop("publications")
        for name in ("counters_during_loop", "counters_client_lifetime"):
            data[name] = attrs.asdict(getattr(self, name))
        return data


_HOLDER_COUNTERS = ("waits", "invalidations", "recoveries")


def _holder_counters(client: Client) -> dict[str, int]:
    holder = client.holder
    return {k: getattr(holder.health(), k) for k in _HOLDER_COUNTERS} if holder else {}


def _token_figures(
    log: FetchLog, before: dict[str, int], after: dict[str, int], loop: Loop
) -> dict[str, Any]:
    """What the token-source seam and the holder saw; read once the client is closed."""
    end = loop.started_at + loop.wall
    return {
        "fetches_started": log.started,
        "fetches_failed": log.failed,
        "fetches_cancelled_at_close": log.cancelled,
        "publications": len(log.published),
        "publications_during_loop": sum(loop.started_at <= t <= end for t in log.published),
        **{f"{k}_during_loop": after[k] - before[k] for k in _HOLDER_COUNTERS},
    }


async def run_once(
    server: ServerProcess, scenario: Scenario, concurrency: int, round_: int, cfg: Config
) -> Run:
    endpoint = server.endpoints[scenario.server]
    pool = min(concurrency, cfg.pool)
    gc.collect()
    lifetime_before = server.stats(scenario.server)
    async with scenario.open(endpoint, pool) as client:
        await drive(client.send, requests=2 * pool, concurrency=pool, timeout=cfg.max_seconds)
        holder_before = _holder_counters(client)
        loop_before = server.stats(scenario.server)
        server_cpu, busy = server.cpu_time(), server.machine_busy()
        loop = await drive(
            client.send, requests=cfg.requests, concurrency=concurrency, timeout=cfg.max_seconds
        )
        server_cpu = server.cpu_time() - server_cpu
        busy = server.machine_busy() - busy
        loop_counters = server.stats(scenario.server) - loop_before
        holder_after = _holder_counters(client)
    # Token figures once the client is closed: a fetch in flight at the end has
    # by then been published or cancelled, as the server's count has seen it.
    lifetime = server.stats(scenario.server) - lifetime_before
    tokens = None
    if client.holder is not None and client.fetches is not None:
        tokens = _token_figures(client.fetches, holder_before, holder_after, loop)
    publications = list(client.fetches.published) if client.fetches is not None else []
    completed = max(loop.completed, 1)
    return Run(
        scenario=scenario.name,
        kind=scenario.kind,
        round=round_,
        concurrency=concurrency,
        pool=pool,
        requests=cfg.requests,
        completed=loop.completed,
        timed_out=loop.timed_out,
        wall_s=loop.wall,
        rps=loop.ok / loop.wall,
        completed_rps=loop.completed / loop.wall,
        cpu_us_per_request=loop.cpu / completed * 1e6,
        client_cpu_util=loop.cpu / loop.wall,
        server_cpu_util=server_cpu / loop.wall,
        others_cpu_util=max(0.0, busy - loop.cpu - server_cpu) / loop.wall,
        statuses=dict(loop.statuses),
        latency=Latency.of(loop.latencies),
        counters_during_loop=loop_counters,
        counters_client_lifetime=lifetime,
        tokens=tokens,
        loop=loop,
        publications=publications,
    )


def refresh_windows(runs: Sequence[Run]) -> dict[str, Any]:
    """Latency of requests answered within ±WINDOW of a token refresh, and of the others.

    The p99 ratio is taken within each run (so a run slowed down by other
    processes is compared with itself), then the median over the runs.
    """
    inside: list[float] = []
    outside: list[float] = []
    refreshes = 0
    ratios = []
    for run in runs:
        assert run.loop is not None
        # The first publication is the first token, fetched before the warm-up.
        near, far, count = split_by_refresh(run.loop, run.publications[1:])
        inside += near
        outside += far
        refreshes += count
        near_p99, far_p99 = Latency.of(near).p99_ms, Latency.of(far).p99_ms
        if near_p99 is not None and far_p99:
            ratios.append(near_p99 / far_p99)
    return {
        "refreshes": refreshes,
        "window": asdict(Latency.of(inside)),
        "steady": asdict(Latency.of(outside)),
        "p99_ratios": ratios,
        "p99_ratio": statistics.median(ratios) if ratios else None,
    }


# --- the other phases ---------------------------------------------------------


async def cold_start(server: ServerProcess, requests: int, pool: int) -> dict[str, Any]:
    """*requests* requests launched at once on a manager that has no token yet.

    For comparison, the same fan on the baseline, whose token was fetched
    beforehand: what launching that many requests costs anyway.
    """
    endpoint = server.endpoints["long"]
    gc.collect()
    before = server.stats("long")
    async with open_aiopay(endpoint, pool, wait_for_token=False) as client:
        loop = await drive(client.send, requests=requests, concurrency=requests, timeout=60.0)
        assert client.holder is not None
        assert client.fetches is not None
        waits, max_wait = client.holder.health().waits, client.holder.health().max_wait
        first_token = client.fetches.published[0] - loop.started_at
    counters = server.stats("long") - before
    gc.collect()
    async with open_baseline(endpoint, pool) as client:
        base = await drive(client.send, requests=requests, concurrency=requests, timeout=60.0)

    def first(loop: Loop) -> float | None:
        return (min(loop.ends) - loop.started_at) * 1e3 if loop.ends else None

    return {
        "requests": requests,
        "pool": pool,
        "completed": loop.completed,
        "statuses": dict(loop.statuses),
        "token_calls": counters.token_calls,
        "api_unauthorized": counters.api_unauthorized,
        "requests_that_waited": waits,
        "longest_wait_ms": max_wait * 1e3,
        "first_token_ms": first_token * 1e3,
        "first_response_ms": first(loop),
        "all_responses_ms": loop.wall * 1e3,
        "baseline_first_response_ms": first(base),
        "baseline_all_responses_ms": base.wall * 1e3,
        "baseline_statuses": dict(base.statuses),
    }


def revision() -> str:
    """The measured source: commit, and whether aiopay_auth/ or benchmarks/ had local changes."""
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(  # noqa: S603
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [*git, "status", "--porcelain", "aiopay_auth", "benchmarks"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" with local changes to aiopay_auth/ or benchmarks/" if dirty else "")


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("aiopay-auth", "aiohttp", "httpx", "authlib", "httpx-auth", "azure-core"):
        try:
            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
        "revision": revision(),
    }


# --- the whole run ------------------------------------------------------------


async def run_all(cfg: Config, server: ServerProcess) -> dict[str, Any]:
    scenarios = [s for s in SCENARIOS if s.name in cfg.scenarios]
    runs: list[Run] = []
    disturbed: list[Run] = []
    budget = cfg.retry_budget
    for round_ in range(1, cfg.rounds + 1):
        for concurrency in cfg.concurrency:
            block = []
            for scenario in scenarios:
                for attempt in range(cfg.retries + 1):
                    run = await run_once(server, scenario, concurrency, round_, cfg)
                    if run.others_cpu_util <= cfg.busy_limit or not budget:
                        break
                    if attempt == cfg.retries:
                        break
                    budget -= 1
                    disturbed.append(run)
                    print(
                        f"  (other processes used {run.others_cpu_util:.0%} of a core: run again)",
                        flush=True,
                    )
                block.append(run)
                base = next((r for r in block if r.kind == "baseline"), None)
                if base is not None:
                    run.rps_ratio = run.rps / base.rps
                    run.cpu_ratio = run.cpu_us_per_request / base.cpu_us_per_request
                print(report.progress_line(run, cfg.rounds), flush=True)
            runs.extend(block)

    contention: dict[str, dict[str, Any]] = {}
    for name in CHURN:
        for concurrency in cfg.concurrency:
            churn = [r for r in runs if r.scenario == name and r.concurrency == concurrency]
            if churn:
                contention.setdefault(name, {})[str(concurrency)] = refresh_windows(churn)

    print(f"cold start: {cfg.cold_requests:,} requests waiting for the first token", flush=True)
    cold = await cold_start(server, cfg.cold_requests, cfg.pool)
    return {"runs": runs, "disturbed": disturbed, "contention": contention, "cold_start": cold}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 2 levels, short sections; 2 to 3 minutes",
    )
    parser.add_argument("--rounds", type=int, help="rounds of interleaved scenarios")
    parser.add_argument("--requests", type=int, help="timed requests per scenario run")
    parser.add_argument("--max-seconds", type=float, help="time bound of one scenario run")
    parser.add_argument(
        "--concurrency", type=lambda s: tuple(int(c) for c in s.split(",")), help="e.g. 64,256"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda s: tuple(s.split(",")),
        help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="where results go"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/benchmarks.md and docs/benchmarks/*.png (full runs only)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server")
    parser.add_argument(
        "--httpx",
        action="store_true",
        help="run only the httpx section (aiopay_auth, Authlib, httpx-auth and raw httpx, "
        "paired; about a minute; with --quick: a few seconds)",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run only the paired section (every aiohttp scenario in one process, rotating "
        "fixed-count batches; asyncio, then uvloop when installed; about 17 minutes; with "
        "--quick: well under a minute)",
    )
    parser.add_argument(
        "--rotations", type=int, help="rotations of the paired section at each concurrency"
    )
    parser.add_argument(
        "--batch", type=int, help="requests per batch of the paired section (at least)"
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="run only the OpenTelemetry hot-path section (absent, off, on, paired; "
        "about a minute; with --quick: a few seconds)",
    )
    parser.add_argument(
        "--traps",
        action="store_true",
        help="run only the traps (pool trap with 2-second tokens, instant and slow token "
        "endpoint; refresh windows by token lifetime; fairness trap; about 2 minutes; with "
        "--quick: under 20 s)",
    )
    parser.add_argument(
        "--tenants",
        action="store_true",
        help="run only the many-merchants section (1 to 10,000 tenants; 2 to 3 minutes; "
        "with --quick: 1, 50, 500)",
    )
    return parser.parse_args(argv)


def paired_config(args: argparse.Namespace) -> paired.PairedConfig:
    """The paired section's configuration: quick or full, with the command line's overrides."""
    cfg = paired.QUICK_PAIRED if args.quick else paired.FULL_PAIRED
    overrides = {"concurrency": args.concurrency, "rotations": args.rotations, "batch": args.batch}
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def run_config(args: argparse.Namespace) -> Config:
    """The separate runs' configuration: quick or full, with the command line's overrides."""
    overrides = {
        "rounds": args.rounds,
        "requests": args.requests,
        "max_seconds": args.max_seconds,
        "concurrency": args.concurrency,
        "scenarios": args.scenarios,
    }
    cfg = QUICK if args.quick else FULL
    return Config(**{**asdict(cfg), **{k: v for k, v in overrides.items() if v is not None}})


@dataclass(frozen=True)
class Sections:
    """The configurations of the sections that follow the main scenario runs."""

    tenants: tenants.TenantsConfig
    httpx: httpx_section.HttpxConfig
    paired: paired.PairedConfig
    telemetry: telemetry.TelemetryConfig
    traps: traps.TrapsConfig

    @classmethod
    def of(cls, args: argparse.Namespace) -> Sections:
        """Quick or full, with the command line's overrides."""
        quick = args.quick
        return cls(
            tenants=tenants.QUICK_TENANTS if quick else tenants.FULL_TENANTS,
            httpx=httpx_section.QUICK_HTTPX if quick else httpx_section.FULL_HTTPX,
            paired=paired_config(args),
            telemetry=telemetry.QUICK_TELEMETRY if quick else telemetry.FULL_TELEMETRY,
            traps=traps.QUICK_TRAPS if quick else traps.FULL_TRAPS,
        )


ALONE = ("tenants", "httpx", "paired", "telemetry", "traps")
"""The sections that can run alone, each behind its own ``--<name>`` flag."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = run_config(args)
    unknown = set(cfg.scenarios) - {s.name for s in SCENARIOS}
    if unknown or "baseline" not in cfg.scenarios:
        print(f"unknown scenarios {sorted(unknown)}, or no baseline", file=sys.stderr)
        return 2
    alone = [name for name in ALONE if getattr(args, name)]
    if args.publish and (cfg.mode != "full" or alone):
        print("--publish takes a full run's figures only", file=sys.stderr)
        return 2
    sections = Sections.of(args)
    if alone:
        return section_alone(args, sections)
    results = measure_all(args, cfg, sections)
    document = report.build(results)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = report.markdown(document)
    (out / "results.md").write_text(markdown)
    report.plots(results, document, out)
    print()
    print(markdown)
    print(f"results in {out}", flush=True)
    if args.publish:
        report.publish(document, out, ROOT / "docs")
        print("published to docs/benchmarks.md and docs/benchmarks/", flush=True)
    return 0


def measure_all(args: argparse.Namespace, cfg: Config, sections: Sections) -> dict[str, Any]:
    """A full or quick run: every scenario and section, with the run's metadata."""
    paired_cfg, httpx_cfg, traps_cfg = sections.paired, sections.httpx, sections.traps
    started = time.time()
    info = machine()
    rss_start = vmrss_kib()
    lifetimes = {
        **LIFETIMES,
        **paired.servers(),
        **httpx_section.servers(httpx_cfg),
        **traps.servers(traps_cfg),
    }
    accepted = [*paired.clients(paired_cfg), *httpx_section.clients(httpx_cfg), *traps.clients()]
    with ServerProcess(
        pin=not args.no_pin,
        lifetimes=lifetimes,
        clients=accepted,
        token_delays=traps.token_delays(traps_cfg),
    ) as server:
        info["pinned"] = server.pinned
        print(
            f"{cfg.mode} run: {cfg.rounds} round(s), concurrency {cfg.concurrency}, "
            f"{cfg.requests:,} requests per run (at most {cfg.max_seconds:g} s), "
            f"pool min(concurrency, {cfg.pool})",
            flush=True,
        )
        results = asyncio.run(run_all(cfg, server))
        loops = " and ".join(paired.available_loops(paired_cfg))
        print(f"paired: every aiohttp scenario in one process, on {loops}", flush=True)
        results["paired"] = paired.run_paired(paired_cfg, server=server)
        if cfg.mode == "full":
            print("instructions per request, counted by valgrind", flush=True)
            results["instructions"] = instructions.run_instructions(
                instructions.FULL_INSTRUCTIONS, server=server
            )
        print("httpx: aiopay_auth, Authlib, httpx-auth and raw httpx, paired", flush=True)
        results["httpx"] = httpx_section.run_httpx(httpx_cfg, server=server)
        print("traps: the pool trap, refresh windows, the fairness trap", flush=True)
        results["traps"] = traps.run_traps(traps_cfg, server=server)
    print("hot path micro-benchmark and memory", flush=True)
    results.update(
        run_micro_fresh(
            loops=cfg.micro_loops,
            repeats=cfg.micro_repeats,
            memory_requests=cfg.memory_requests,
            processes=cfg.micro_processes,
        )
    )
    print("OpenTelemetry on the hot path: absent, off, on", flush=True)
    results["telemetry"] = asyncio.run(telemetry.run_telemetry(sections.telemetry))
    print("many merchants: tenants of one provider API", flush=True)
    results["tenants"] = asyncio.run(tenants.run_tenants(sections.tenants, pin=not args.no_pin))
    info["load_average_at_end"] = os.getloadavg()
    info["client_rss_kib"] = {"start": rss_start, "end": vmrss_kib()}
    results["meta"] = {
        "config": asdict(cfg),
        "machine": info,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": time.time() - started,
    }
    return results


def section_alone(args: argparse.Namespace, sections: Sections) -> int:
    """One of ``--tenants``, ``--httpx``, ``--paired``, ``--telemetry``, ``--traps``: alone."""
    if sum(bool(getattr(args, name)) for name in ALONE) > 1:
        flags = ", ".join(f"--{name}" for name in ALONE)
        print(f"{flags} each run one section alone: pick one", file=sys.stderr)
        return 2
    pin = not args.no_pin
    if args.telemetry:
        return _section_only(
            "telemetry",
            lambda: asyncio.run(telemetry.run_telemetry(sections.telemetry)),
            telemetry.build,
            telemetry.markdown,
            args.out,
        )
    if args.traps:
        return _section_only(
            "traps",
            lambda: traps.run_traps(sections.traps, pin=pin),
            traps.build,
            traps.markdown,
            args.out,
        )
    if args.tenants:
        return tenants_only(sections.tenants, args.out, pin=pin)
    if args.httpx:
        return httpx_only(sections.httpx, args.out, pin=pin)
    return paired_only(sections.paired, args.out, pin=pin)


def _section_only(
    name: str,
    measure: Callable[[], dict[str, Any]],
    build: Callable[[dict[str, Any]], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], list[str]],
    out: Path,
) -> int:
    """One section alone: *measure*, *build* its document, write ``out/{name}.{json,md}``."""
    info = machine()
    document = build(measure())
    document["machine"] = info | {"load_average_at_end": os.getloadavg()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    text = "\n".join(markdown(document))
    (out / f"{name}.md").write_text(text)
    print()
    print(text)
    print(f"results in {out}", flush=True)
    return 0


def tenants_only(cfg: tenants.TenantsConfig, out: Path, *, pin: bool) -> int:
    """``--tenants``: the many-merchants section alone, into ``out/tenants.{json,md}``."""
    return _section_only(
        "tenants",
        lambda: asyncio.run(tenants.run_tenants(cfg, pin=pin)),
        tenants.build,
        tenants.markdown,
        out,
    )


def httpx_only(cfg: httpx_section.HttpxConfig, out: Path, *, pin: bool) -> int:
    """``--httpx``: the httpx section alone, into ``out/httpx.{json,md}``."""
    return _section_only(
        "httpx",
        lambda: httpx_section.run_httpx(cfg, pin=pin),
        httpx_section.build,
        httpx_section.markdown,
        out,
    )


def paired_only(cfg: paired.PairedConfig, out: Path, *, pin: bool) -> int:
    """``--paired``: the paired aiohttp section alone, into ``out/paired.{json,md}``."""
    return _section_only(
        "paired",
        lambda: paired.run_paired(cfg, pin=pin),
        paired.build,
        paired.markdown,
        out,
    )
