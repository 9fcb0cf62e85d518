"""Client instructions per request, counted by valgrind: a CPU figure noise cannot move.

Client CPU time per request moves by 10-20 % from one batch to the next on
a shared 2-core virtual machine, even paired, more than the 2 % the CPU
target judges. The number of instructions the client executes per request
barely moves at all. Here each aiopay_auth-based and raw aiohttp client of
the paired section (:mod:`benchmarks.paired`, asyncio) runs in a child
interpreter under valgrind's cachegrind (``--cache-sim=no``: it only
counts instructions), against the same fake provider, twice: a short run
and a long run of the same warm-up and concurrency. The difference of
their instruction counts over the difference of their requests is the
client's instructions per request, start-up, imports, token fetch and
warm-up all cancelled out. ``PYTHONHASHSEED=0`` keeps string hashing the
same in every child.

This is context for the CPU target, not its verdict (which the paired CPU
time gives, as issue 14 asks). cachegrind counts the instructions the
process runs in user space: the kernel's work for its sockets, a large
share of the CPU time of a request here, is not in them, and a hot
instruction of Python code costs less than one that misses the cache. So
a pure-Python addition's share of the instructions is an upper bound on
its share of the CPU time. The section is skipped when valgrind is not
installed, and in a quick run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import paired
from .scenarios import drive
from .server import Endpoint, ServerProcess


SCENARIOS = ("raw-100", "one-line", "lock-per-request", "aiopay", "aiopay-own")
"""The paired section's aiohttp clients counted here (``raw-100`` is the base)."""
LOOP = paired.LOOPS_COUNTED

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


@dataclass(frozen=True)
class InstructionsConfig:
    """What the instructions section runs."""

    concurrency: tuple[int, ...] = (64, 256)
    short: int = 300
    """Requests of the short run …"""
    long: int = 900
    """… and of the long one: per request is the difference over ``long - short``."""
    warmup: int = 200
    pool: int = 100
    timeout: float = 900.0
    """Seconds one counted child may take (valgrind runs it some 30 times slower)."""
    parallel: int = 2
    """Children counted at the same time."""


FULL_INSTRUCTIONS = InstructionsConfig()


def valgrind() -> str | None:
    """valgrind's path, or ``None`` when it is not installed."""
    return shutil.which("valgrind")


def _count(tool: str, spec: dict[str, Any], timeout: float) -> tuple[int, dict[str, int]]:
    """Instructions a child with *spec* executed, and the statuses of its timed requests."""
    # On any core: the parent may be pinned to one, and a count does not depend on speed.
    taskset = shutil.which("taskset")
    anywhere = [taskset, "-c", f"0-{(os.cpu_count() or 1) - 1}"] if taskset else []
    command = [
        *anywhere,
        tool,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        json.dumps(spec),
    ]
    env = os.environ | {"PYTHONHASHSEED": "0"}
    done = subprocess.run(  # noqa: S603 - valgrind on our own interpreter and module
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        msg = f"counting {spec['scenario']} failed (exit {done.returncode}): {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    statuses: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return int(found.group(1).replace(",", "")), statuses


def run_instructions(
    cfg: InstructionsConfig, *, server: ServerProcess, progress: bool = True
) -> dict[str, Any]:
    """Count every scenario at every level against *server* (which accepts the paired
    section's client ids); ``{"skipped": why}`` when valgrind is not installed.

    The children run two at a time, on any core: a count does not depend on
    how fast the child runs.
    """
    tool = valgrind()
    if tool is None:
        return {"skipped": "valgrind is not installed"}
    started = time.time()
    load_at_start = os.getloadavg()
    specs = []
    for level in cfg.concurrency:
        for name in SCENARIOS:
            endpoint = dataclasses.replace(
                server.endpoints[paired.SERVER], client_id=paired.client_id(LOOP, name)
            )
            for requests in (cfg.short, cfg.long):
                specs.append(
                    {
                        "scenario": name,
                        "endpoint": asdict(endpoint),
                        "concurrency": level,
                        "requests": requests,
                        "warmup": cfg.warmup,
                        "pool": cfg.pool,
                    }
                )

    def count(spec: dict[str, Any]) -> tuple[int, dict[str, int]] | str:
        try:
            return _count(tool, spec, cfg.timeout)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            return f"{type(exc).__name__}: {str(exc)[:300]}"  # one child: not the whole run

    with concurrent.futures.ThreadPoolExecutor(cfg.parallel) as pool:
        counted = list(pool.map(count, specs))
    found = {
        (spec["concurrency"], spec["scenario"], spec["requests"]): result
        for spec, result in zip(specs, counted, strict=True)
    }
    levels: dict[str, Any] = {}
    for level in cfg.concurrency:
        rows: dict[str, Any] = {}
        for name in SCENARIOS:
            row = _row(found[level, name, cfg.short], found[level, name, cfg.long], cfg)
            rows[name] = row
            if progress:
                print(f"instructions c={level} {name}: {row['per_request']}", flush=True)
        base = rows["raw-100"]["per_request"]
        for row in rows.values():
            per_request = row["per_request"]
            row["ratio"] = None if per_request is None or base is None else per_request / base
        levels[str(level)] = rows
    return {
        "config": asdict(cfg),
        "valgrind": subprocess.run(  # noqa: S603 - valgrind --version
            [tool, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "duration_s": time.time() - started,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "levels": levels,
    }


def _row(
    short: tuple[int, dict[str, int]] | str,
    long: tuple[int, dict[str, int]] | str,
    cfg: InstructionsConfig,
) -> dict[str, Any]:
    """One scenario's figures from its two children; no figure when either failed."""
    if isinstance(short, str) or isinstance(long, str):
        error = short if isinstance(short, str) else long
        return {"per_request": None, "non_200": None, "error": str(error)}
    non_200 = sum(n for _, s in (short, long) for code, n in s.items() if code != "200")
    if non_200:
        return {"per_request": None, "non_200": non_200, "error": "requests not answered 200"}
    return {
        "instructions": {str(cfg.short): short[0], str(cfg.long): long[0]},
        "per_request": (long[0] - short[0]) / (cfg.long - cfg.short),
        "non_200": 0,
        "error": None,
    }


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's lines, for the report and ``docs/benchmarks.md``."""
    lines = ["## Instructions per request", ""]
    if "skipped" in doc:
        return [*lines, f"Not measured in this run: {doc['skipped']}.", ""]
    cfg = doc["config"]
    lines += [
        "**Noise-free context for the CPU target, not its verdict.** The paired section's "
        "aiohttp clients (asyncio), each in a child interpreter under valgrind's cachegrind "
        f"({doc['valgrind']}, `--cache-sim=no`: instructions only), against the same fake "
        f"provider: {cfg['warmup']} warm-up requests, then a run of {cfg['short']:,} and, in "
        f"another child, one of {cfg['long']:,} requests, from as many looping workers as the "
        "level says (pool 100). Instructions per request is the difference of the two "
        f"children's counts over {cfg['long'] - cfg['short']:,} requests: start-up, imports, "
        "token fetch and warm-up cancel out. Unlike CPU time, the count does not move with "
        "other work on the machine (two counts of the same child differ by about 0.1 %). It "
        "counts user space only: the kernel's work for the sockets, a large share of a "
        "request's CPU time here, is not in it, so a pure-Python addition's share of the "
        "instructions is an upper bound on its share of the CPU time. "
        f"{doc['duration_s']:.0f} s here.",
        "",
        "| concurrency | scenario | instructions per request | x raw-100 | non-200 |",
        "|---|---|---|---|---|",
    ]
    for level, rows in doc["levels"].items():
        for name, row in rows.items():
            if row["per_request"] is None:
                non_200 = "n/a" if row["non_200"] is None else row["non_200"]
                lines.append(
                    f"| {level} | {name} | not counted: {row['error']} | n/a | {non_200} |"
                )
                continue
            ratio = "n/a" if row["ratio"] is None else format(row["ratio"], ".3f")
            lines.append(
                f"| {level} | {name} | {row['per_request']:,.0f} | {ratio} | {row['non_200']} |"
            )
    return [*lines, ""]


# --- the counted child -----------------------------------------------------------------


async def _child(spec: dict[str, Any]) -> dict[str, int]:
    scenario = next(s for s in paired.SCENARIOS if s.name == spec["scenario"])
    endpoint = Endpoint(**spec["endpoint"])
    async with scenario.open(endpoint, spec["pool"]) as client:
        await drive(
            client.send,
            requests=spec["warmup"],
            concurrency=min(spec["concurrency"], spec["pool"]),
            timeout=600,
        )
        loop = await drive(
            client.send, requests=spec["requests"], concurrency=spec["concurrency"], timeout=600
        )
    return dict(loop.statuses)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_child(json.loads(sys.argv[1])))), flush=True)
