"""Paired measurement, shared by every paired section: rotating order, ratios, quartiles.

A paired section opens all its clients once, side by side in one process,
then sends short fixed-count batches through each in a balanced rotating
order (:func:`rotation_order`), so that the machine's noise falls on each
alike. A
figure relative to a base scenario is the median over rotations of each
batch's ratio to the base's batch of the same rotation, printed with the
interquartile range. :mod:`benchmarks.httpx_section` and
:mod:`benchmarks.paired` both build on these helpers.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .scenarios import Loop
from .server import Counters


_T = TypeVar("_T")

WINDOW = 0.1
"""Half-width, in seconds, of the window around a token publication."""


def split_by_refresh(
    loop: Loop, publications: Sequence[float], window: float = WINDOW
) -> tuple[list[float], list[float], int]:
    """Latencies of *loop*'s requests answered within ±*window* of a publication, and the rest.

    *publications* are ``time.perf_counter()`` times of tokens published
    (refreshes: leave out a first token fetched before the loop). Returns
    the two lists and how many publications fell within the loop's span
    (widened by *window* at each end).
    """
    start, end = loop.started_at - window, loop.started_at + loop.wall + window
    pubs = sorted(t for t in publications if start <= t <= end)
    inside: list[float] = []
    outside: list[float] = []
    for done, latency in zip(loop.ends, loop.latencies, strict=True):
        i = bisect.bisect_left(pubs, done - window)
        (inside if i < len(pubs) and pubs[i] <= done + window else outside).append(latency)
    return inside, outside, len(pubs)


def quartiles(values: Sequence[float]) -> dict[str, float]:
    """Median and quartiles (inclusive method) of *values*; one value is all three."""
    if len(values) < 2:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": q2, "q1": q1, "q3": q3}


def latency_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max of *seconds*, in milliseconds."""
    if not seconds:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(seconds)

    def pct(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3  # nearest rank

    return {"p50": pct(0.50), "p99": pct(0.99), "max": ordered[-1] * 1e3}


def rotation_order(names: Sequence[_T], rotation: int) -> list[_T]:
    """The order of rotation *rotation*: a balanced Latin square (Williams design).

    Over ``len(names)`` rotations (twice that for an odd count), each name
    takes every place once and follows every other name equally often,
    so what one batch leaves behind (garbage, caches, sockets) weighs on
    every other alike. A plain cyclic order (A B C, B C A, …) would put
    each name after the same one every time. The first row is 0, 1, n-1,
    2, n-2, …; row *r* adds *r* to each; for an odd count, the second
    *n* rows are the first ones reversed.
    """
    n = len(names)
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    row = [(i + rotation) % n for i in first]
    if n % 2 and (rotation // n) % 2:
        row.reverse()
    return [names[i] for i in row]


def paired_ratios(mine: Sequence[float], theirs: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of the per-rotation ratios ``mine[i] / theirs[i]``."""
    return quartiles([m / t for m, t in zip(mine, theirs, strict=True)])


@dataclass
class Batches:
    """What one scenario's batches measured, one entry per rotation."""

    rps: list[float] = dataclasses.field(default_factory=list)
    cpu_us: list[float] = dataclasses.field(default_factory=list)
    p99_ms: list[float] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    expired: int = 0
    unauthorized: int = 0
    wall_s: float = 0.0
    timed_out: int = 0

    def add(self, loop: Loop, counted: Counters) -> None:
        """Record one batch: *loop* from :func:`~benchmarks.scenarios.drive`, *counted*
        the server's counts over it (requests answered 200 per second; client CPU per
        request from ``time.process_time()`` around the batch)."""
        self.rps.append(loop.ok / loop.wall)
        self.cpu_us.append(loop.cpu / max(loop.completed, 1) * 1e6)
        self.p99_ms.append(latency_ms(loop.latencies)["p99"] or 0.0)
        self.latencies.extend(loop.latencies)
        self.statuses.update(loop.statuses)
        self.expired += counted.api_expired
        self.unauthorized += counted.api_unauthorized
        self.wall_s += loop.wall
        self.timed_out += loop.timed_out


def iqr_text(q: dict[str, float], spec: str) -> str:
    """``median [q1, q3]`` of *q* (from :func:`quartiles`), each formatted with *spec*."""
    return f"{format(q['median'], spec)} [{format(q['q1'], spec)}, {format(q['q3'], spec)}]"


def ms_text(value: float | None) -> str:
    """Milliseconds to one decimal, or ``n/a``."""
    return "n/a" if value is None else f"{value:.1f}"


def target(
    name: str, scope: str, measured: str, limit: str, passed: bool | None, *, why: str = ""
) -> dict[str, Any]:
    """One judged target: a row of a targets table (``passed`` ``None``: not judged).

    *why*: a sentence built from the target's own figures, shown under the
    table when it fails (before the sentence :data:`WHY` has for its kind).
    """
    return {
        "target": name,
        "scope": scope,
        "measured": measured,
        "limit": limit,
        "passed": passed,
        "why": why,
    }


def targets_table(targets: list[dict[str, Any]], measured: str = "measured") -> list[str]:
    """A section's targets as Markdown table lines, the verdict in bold.

    *measured* heads the third column; a target not judged (``passed`` is
    ``None``) reads ``n/a``.
    """
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    return [
        f"| target | scope | {measured} | limit | result |",
        "|---|---|---|---|---|",
        *(
            f"| {t['target']} | {t['scope']} | {t['measured']} | {t['limit']} | "
            f"**{verdict[t['passed']]}** |"
            for t in targets
        ),
    ]


WHY = {
    "throughput, fair and fresh (paired)": (
        "Where the client's core is the limit, throughput follows client CPU per request. "
        "In fixed-count batches every request is served before its batch ends, so max / "
        "p99 cannot show starvation here (raw-100's own is in the row): fairness is judged "
        "in the fairness trap ([Traps](#traps))."
    ),
    "client CPU per request (paired)": (
        "aiopay_auth's own work per request is the middleware and `FairPool`'s admission "
        "(for `aiopay-own`, a second middleware layer that every suspension of the request "
        "passes through); [Instructions per request](#instructions-per-request) counts it "
        "without the noise, where valgrind ran."
    ),
    "p99 in refresh windows vs steady state (1-s tokens, within each run)": (
        "Requests are placed in a window by when they were answered (within 100 ms of a "
        "token's publication); where latency is longer than that (high concurrency), a "
        "stall a refresh causes shows in requests answered later, outside the window. Each "
        "run has a few refreshes, so its window p99 rests on a few thousand requests."
    ),
    "ahead of every peer (paired)": (
        "Both sides' batches are fixed-count and paired, so this compares work per request, "
        "not fairness (a peer that starves some requests is not slower for it here)."
    ),
    "ahead of every peer (separate runs)": (
        "judged on separate runs (no paired figures in this run), which move 15-20 % "
        "between rounds on this shared machine."
    ),
    "hot path (stamp only, no I/O) within 150 ns of a bare attribute read": (
        "The cost is reading the monotonic clock (what makes the expiry check exact) and "
        "setting the header in aiohttp's `CIMultiDict`."
    ),
    "0 401s in the pool trap where every other scenario has them": (
        "The trap is meant to show the 401s that stamping before a long pool wait brings; "
        "for a scenario it does not catch, the premise does not hold (the pool trap's own "
        "section describes each scenario's refresh)."
    ),
    "client CPU per request vs 1 tenant (paired)": (
        "The limit is two-sided (within 5 % of 1 tenant): a count measured cheaper per "
        "request than 1 tenant fails it as surely as a dearer one."
    ),
}
"""Why a target kind can fail here: a sentence shown under the targets table for each failure."""


def why_failed(targets: list[dict[str, Any]]) -> list[str]:
    """A sentence on why, for each failed target (none when all passed).

    A target's own ``why`` (built from its figures) comes first, then the
    sentence :data:`WHY` has for its kind; failures with the same sentence
    share a line.
    """
    failed: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        if target["passed"] is False:
            general = WHY.get(target["target"], "see the section the figure comes from.")
            own = target.get("why")
            reason = general if not own else f"{own} {general}"
            failed.setdefault((target["target"], reason), []).append(target["scope"])
    if not failed:
        return []
    lines = ["Why the failing targets fail:", ""]
    for (name, reason), scopes in failed.items():
        lines.append(f"- **{name}** ({'; '.join(scopes)}): {reason}")
    return [*lines, ""]


def spans(q: dict[str, float], limit: float) -> bool:
    """Whether the interquartile range of *q* includes *limit*: the batches do not settle it."""
    return q["q1"] <= limit <= q["q3"]


def unsettled(q: dict[str, float], *limits: float) -> str:
    """``"; IQR spans the limit: not settled"`` when the interquartile range of *q*
    includes one of *limits*, PASS or FAIL alike; else nothing."""
    if any(spans(q, limit) for limit in limits):
        return "; IQR spans the limit: not settled"
    return ""


def spread_note(q: dict[str, float], limit: float, *, above_fails: bool) -> str:
    """Whether the interquartile range of *q* settles a verdict against *limit*."""
    low, high = q["q1"], q["q3"]
    if spans(q, limit):
        return (
            f"its interquartile range ({low:.3f}-{high:.3f}) includes {limit:g}: "
            "the batches do not settle this verdict."
        )
    side = "above" if (low > limit) else "below"
    failing_side = (side == "above") == above_fails
    return f"its interquartile range ({low:.3f}-{high:.3f}) lies wholly {side} {limit:g}" + (
        ": the batches agree on the verdict." if failing_side else "."
    )
