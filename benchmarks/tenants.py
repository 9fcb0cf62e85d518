"""Many merchants in one process: per-request cost at 1 to 10,000 tenants, memory, cold start.

Every tenant is one merchant's credential for the same provider API,
served as documented: ``tokens.add_tenants(...)``, ``merchants.add(key,
provider)``, one ``tokens.session(merchants, limit=...)``, and
``middlewares=tenant.middlewares`` on each request. The fake provider
(``rfc6749``, day-long tokens) runs in a child process
(:class:`~aiopay_auth.testing.FakeProviderProcess`, pinned to its own core
when there are two) and accepts every merchant's credential; it counts
API requests by the client whose token they carried, so the run checks
that each request went out with its own merchant's token.

Three phases:

* **Cold start.** The largest configuration is built first: *N* tenants
  added at once, timed until every one has published its first token,
  under the set's limit (``max_concurrent_fetches``, default 4, and
  ``fetches_per_second``). The server reports the most token requests it
  handled at once; the busiest second counts tokens received by the
  client per second of the cold start.
* **Per-request client cost, paired.** The configurations (1, 10, 100,
  1,000 and 10,000 tenants) stay open in this one process. In each rotation
  each sends one fixed-count batch (*concurrency* workers, tenants chosen
  round-robin over all *N*), in a balanced rotating order (each in every
  place, and after every other, equally often), so that the machine's
  noise falls on each alike. Client CPU per request is
  ``time.process_time()`` around a batch; each configuration is judged
  on the median over rotations of its ratio to the 1-tenant batch of the
  same rotation, with the interquartile range of those ratios.
* **Memory.** *M* tenants added to a fresh manager: tracemalloc's growth
  per tenant once all hold a token (active), and in another manager once
  all rest (``idle_after``, no request: no token, no refreshing). The
  active figure is also taken at each tenant count of the configurations
  (1 to 10,000), each in a fresh manager of its own, after the timed
  phases (tracemalloc slows the client: it never runs while a build or a
  batch is timed). Profiles are built before the first snapshot (the
  caller builds them anyway); the servers are in another process.
"""

from __future__ import annotations

import functools
import gc
import os
import secrets
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import anyio
from yarl import URL

from aiopay_auth import (
    Provider,
    RefreshPolicy,
    Secret,
    Tenant,
    Token,
    TokenHolder,
    TokenManager,
    TokenSource,
)
from aiopay_auth.providers import generic
from aiopay_auth.testing import FakeEndpoint, FakeProvider, FakeProviderProcess

from .rotations import rotation_order, targets_table, unsettled, why_failed
from .scenarios import drive
from .server import fake


CPU_SPREAD_TARGET = 0.05
"""Per-request client CPU at every tenant count within 5 % of the 1-tenant case."""
IDLE_TARGET = 4 * 1024
"""Bytes per resting tenant."""
ACTIVE_TARGET = 8 * 1024
"""Bytes per tenant holding a token."""

_LONG, _ACTIVE, _SHORT = "long", "memory-active", "memory-idle"
_SHORT_LIFETIME = 1.0  # resting tenants' tokens: the first refresh point, hence rest, comes soon
_IDLE_AFTER = 0.2


@dataclass(frozen=True)
class TenantsConfig:
    """What the tenants section runs."""

    counts: tuple[int, ...] = (1, 10, 100, 1_000, 10_000)
    rotations: int = 20
    batch: int = 1_000
    concurrency: int = 64
    pool: int = 64
    memory_tenants: int = 1_000
    max_concurrent_fetches: int = 4
    fetches_per_second: float = 1_000.0
    token_delay: float = 0.002
    """Seconds the fake holds each token request: without it, the server would answer
    each at once and could never see two in flight, whatever the client sent."""
    wait_timeout: float = 60.0


FULL_TENANTS = TenantsConfig()
QUICK_TENANTS = TenantsConfig(counts=(1, 50, 500), rotations=3, batch=300, memory_tenants=100)


def _credentials(prefix: str, n: int) -> list[tuple[str, str]]:
    """*n* merchants' client ids and random secrets (never printed)."""
    return [(f"{prefix}-{i}", secrets.token_urlsafe(12)) for i in range(n)]


def _profile(endpoint: FakeEndpoint, client_id: str, secret: str) -> Provider:
    return generic.provider(
        name="bench",
        token_url=endpoint.token_url,
        api=endpoint.api_base,
        client_id=client_id,
        client_secret=secret,
    )


# --- one configuration: N tenants, one session -----------------------------------


@dataclass
class _Arrivals:
    """Tokens published by a set, seen at the ``token_source`` seam."""

    expected: int
    times: list[float] = field(default_factory=list)
    failed: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)


class _Noting:
    """A tenant's token source that notes when each token arrives (outside the limit)."""

    __slots__ = ("_arrivals", "_inner")

    def __init__(self, inner: TokenSource, arrivals: _Arrivals) -> None:
        self._inner = inner
        self._arrivals = arrivals

    async def fetch(self, refresh_token: Secret | None) -> Token:
        arrivals = self._arrivals
        try:
            token = await self._inner.fetch(refresh_token)
        except Exception:
            arrivals.failed += 1
            raise
        arrivals.times.append(time.perf_counter())
        if len(arrivals.times) >= arrivals.expected:
            arrivals.done.set()
        return token


@dataclass
class Setup:
    """One open configuration: its tenants, its session, what it sent to whom."""

    n: int
    keys: list[str]
    tenants: list[Tenant]
    http: aiohttp.ClientSession
    url: URL
    sent: list[int]
    cold: dict[str, Any]
    cursor: int = 0

    async def send(self) -> int:
        """One request for the next tenant, round-robin over all of them."""
        i = self.cursor
        self.cursor = i + 1 if i + 1 < self.n else 0
        self.sent[i] += 1
        async with self.http.get(self.url, middlewares=self.tenants[i].middlewares) as resp:
            await resp.read()
            return resp.status


@asynccontextmanager
async def open_setup(
    endpoint: FakeEndpoint, credentials: Sequence[tuple[str, str]], cfg: TenantsConfig
) -> AsyncIterator[Setup]:
    """Add every credential as a tenant, wait for all first tokens (timed), open the session."""
    n = len(credentials)
    arrivals = _Arrivals(expected=n)

    def noting(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        return _Noting(inner, arrivals)

    profiles = [_profile(endpoint, key, secret) for key, secret in credentials]
    policy = RefreshPolicy(wait_timeout=cfg.wait_timeout)
    async with AsyncExitStack() as stack:
        tokens = await stack.enter_async_context(TokenManager(token_source=noting, policy=policy))
        merchants = tokens.add_tenants(
            "bench",
            api=endpoint.api_base,
            max_concurrent_fetches=cfg.max_concurrent_fetches,
            fetches_per_second=cfg.fetches_per_second,
        )
        gc.collect()
        started = time.perf_counter()
        tenants = [
            merchants.add(key, profile)
            for (key, _), profile in zip(credentials, profiles, strict=True)
        ]
        added = time.perf_counter()
        with anyio.fail_after(cfg.wait_timeout + n / cfg.fetches_per_second):
            await arrivals.done.wait()
        ready = time.perf_counter()
        del profiles
        gc.collect()
        cold = {
            "tenants": n,
            "add_ms": (added - started) * 1e3,
            "all_tokens_s": ready - started,
            "token_failures": arrivals.failed,
            "busiest_second": busiest_second(arrivals.times),
        }
        http = await stack.enter_async_context(tokens.session(merchants, limit=cfg.pool))
        yield Setup(
            n=n,
            keys=[key for key, _ in credentials],
            tenants=tenants,
            http=http,
            url=endpoint.api_base / "payments",
            sent=[0] * n,
            cold=cold,
        )


async def _until(predicate: Callable[[], bool], *, within: float) -> None:
    """Wait until *predicate* holds; ``TimeoutError`` after *within* seconds."""
    with anyio.fail_after(within):
        while True:
            if predicate():
                return
            await anyio.sleep(0.02)


def busiest_second(times: Sequence[float]) -> int:
    """The most of *times* within any one second (a sliding window)."""
    ordered = sorted(times)
    most = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


# --- the phases -------------------------------------------------------------------


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0]
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


async def _paired_cpu(
    setups: dict[int, Setup], cfg: TenantsConfig, progress: bool
) -> dict[str, Any]:
    """Batches in rotating order; CPU per request and its ratio to the 1-tenant batch."""
    order = sorted(cfg.counts)  # the smallest, 1 tenant, is the base
    for n in order:  # warm-up: fill each pool, touch each code path
        await drive(setups[n].send, requests=cfg.pool * 2, concurrency=cfg.pool, timeout=60.0)
    cpu: dict[int, list[float]] = {n: [] for n in order}
    statuses: dict[int, dict[str, int]] = {n: {} for n in order}
    for rotation in range(cfg.rotations):
        for n in rotation_order(order, rotation):
            gc.collect()
            loop = await drive(
                setups[n].send, requests=cfg.batch, concurrency=cfg.concurrency, timeout=60.0
            )
            cpu[n].append(loop.cpu / max(loop.completed, 1) * 1e6)
            for status, count in loop.statuses.items():
                statuses[n][status] = statuses[n].get(status, 0) + count
        if progress:
            line = "  ".join(f"{n:,}: {cpu[n][-1]:.1f}" for n in order)
            print(f"tenants rotation {rotation + 1}/{cfg.rotations}  µs/req  {line}", flush=True)
    base = order[0]
    rows = {}
    for n in order:
        ratios = [c / b for c, b in zip(cpu[n], cpu[base], strict=True)]
        q1, median, q3 = _quartiles(ratios)
        c1, cmed, c3 = _quartiles(cpu[n])
        rows[str(n)] = {
            "tenants": n,
            "cpu_us_per_request": {"median": cmed, "q1": c1, "q3": c3},
            "ratio": {"median": median, "q1": q1, "q3": q3},
            "ratios": ratios,
            "statuses": statuses[n],
        }
    return {"base": base, "rows": rows}


async def _memory(
    endpoint: FakeEndpoint, credentials: Sequence[tuple[str, str]], *, rest: bool
) -> float:
    """tracemalloc's growth per tenant once all hold a token, or (*rest*) once all rest.

    Resting tenants get no request: each rests at its first refresh point
    (tokens of 1 s: about half a second after its first token).
    """
    async with TokenManager() as tokens:
        merchants = tokens.add_tenants(
            "memory",
            api=endpoint.api_base,
            max_concurrent_fetches=16,
            fetches_per_second=100_000,
            idle_after=_IDLE_AFTER if rest else None,
        )
        (warm_key, warm_secret), measured = credentials[0], credentials[1:]
        warm = merchants.add(warm_key, _profile(endpoint, warm_key, warm_secret))
        await warm.holder.get()  # every code path once before measuring, resting too
        if rest:
            await _until(lambda: warm.holder.state == "idle", within=30)
        profiles = [_profile(endpoint, key, secret) for key, secret in measured]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            added = [
                merchants.add(key, profile)
                for (key, _), profile in zip(measured, profiles, strict=True)
            ]
            if rest:
                await _until(lambda: all(t.holder.state == "idle" for t in added), within=300)
                if any(t.holder.current is not None for t in added):  # pragma: no cover
                    msg = "a resting tenant kept its token"
                    raise RuntimeError(msg)
            else:
                await _until(lambda: all(t.holder.current is not None for t in added), within=300)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / len(measured)


async def run_tenants(
    cfg: TenantsConfig, *, pin: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Run the three phases against a fake provider in a child process; return the figures."""
    counts = sorted(cfg.counts, reverse=True)  # the largest first: its build is the cold start
    creds = {n: _credentials(f"t{n}", n) for n in counts}
    # One warm tenant and the measured ones: each memory pass takes a prefix.
    memory_creds = _credentials("mem", max(cfg.memory_tenants, *counts) + 1)
    servers = {
        _LONG: functools.partial(
            fake, 86_400.0, [pair for n in counts for pair in creds[n]], cfg.token_delay
        ),
        _ACTIVE: functools.partial(
            FakeProvider, "rfc6749", lifetime=86_400.0, clients=memory_creds
        ),
        _SHORT: functools.partial(
            FakeProvider, "rfc6749", lifetime=_SHORT_LIFETIME, clients=memory_creds
        ),
    }
    cores = sorted(os.sched_getaffinity(0))
    pinned = pin and len(cores) >= 2
    started = time.time()
    load_at_start = os.getloadavg()
    async with FakeProviderProcess(
        servers, cpu=cores[-1] if pinned else None, name="bench-tenants-server"
    ) as fakes:
        if pinned:
            os.sched_setaffinity(0, set(cores[:-1]))
        try:
            endpoint = fakes.endpoints[_LONG]
            async with AsyncExitStack() as stack:
                setups: dict[int, Setup] = {}
                cold_peaks: dict[int, int] = {}
                for n in counts:
                    if progress:
                        print(
                            f"tenants: adding {n:,} tenants, waiting for their tokens", flush=True
                        )
                    setups[n] = await stack.enter_async_context(open_setup(endpoint, creds[n], cfg))
                    # Built one after another: the server's peak so far is this build's or an
                    # earlier one's (each under the same cap).
                    peak = (await fakes.client_counters_async())[_LONG].max_token_calls_in_flight
                    cold_peaks[n] = peak
                paired = await _paired_cpu(setups, cfg, progress)
                sent = {
                    key: count
                    for s in setups.values()
                    for key, count in zip(s.keys, s.sent, strict=True)
                }
                cold = setups[counts[0]].cold | {"server_max_in_flight": cold_peaks[counts[0]]}
            clients = (await fakes.client_counters_async())[_LONG]
            if progress:
                print(
                    f"tenants: memory of {cfg.memory_tenants:,} tenants (tracemalloc)", flush=True
                )
            mem_creds = memory_creds[: cfg.memory_tenants + 1]
            memory: dict[str, Any] = {
                "tenants": cfg.memory_tenants,
                "active_bytes_per_tenant": await _memory(
                    fakes.endpoints[_ACTIVE], mem_creds, rest=False
                ),
                "idle_bytes_per_tenant": await _memory(
                    fakes.endpoints[_SHORT], mem_creds, rest=True
                ),
                "token_lifetime_s": _SHORT_LIFETIME,
                "idle_after_s": _IDLE_AFTER,
            }
            by_count: dict[str, float] = {}
            for n in sorted(cfg.counts):  # untimed: after the builds and the batches
                began = time.perf_counter()
                by_count[str(n)] = (
                    memory["active_bytes_per_tenant"]  # that very pass, measured above
                    if n == cfg.memory_tenants
                    else await _memory(fakes.endpoints[_ACTIVE], memory_creds[: n + 1], rest=False)
                )
                if progress:
                    print(
                        f"tenants: memory at {n:,} active (tracemalloc): "
                        f"{by_count[str(n)] / 1024:.1f} KiB each, "
                        f"{time.perf_counter() - began:.1f} s",
                        flush=True,
                    )
            memory["active_bytes_per_tenant_by_count"] = by_count
        finally:
            os.sched_setaffinity(0, set(cores))
    served = clients.api_calls_by_client
    misrouted = sum(1 for key, count in sent.items() if served.get(key, 0) != count)
    token_calls = clients.token_calls_by_client
    return {
        "config": asdict(cfg),
        "pinned": pinned,
        "duration_s": time.time() - started,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "cold_start": cold,
        "cold_start_by_count": {str(n): s.cold for n, s in setups.items()},
        "server_max_in_flight": clients.max_token_calls_in_flight,
        "max_concurrent_fetches": cfg.max_concurrent_fetches,
        "routing": {
            "requests": sum(sent.values()),
            "tenants": len(sent),
            "tenants_whose_count_differs": misrouted,
            "token_calls": sum(token_calls.values()),
            "tenants_with_more_than_one_token_call": sum(1 for c in token_calls.values() if c > 1),
        },
        "cpu": paired,
        "memory": memory,
    }


# --- verdicts and markdown ---------------------------------------------------------


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for this section, judged."""
    rows = []
    cpu = doc["cpu"]
    for row in cpu["rows"].values():
        if row["tenants"] == cpu["base"]:
            continue
        ratio = row["ratio"]
        rows.append(
            {
                "target": "client CPU per request vs 1 tenant (paired)",
                "scope": f"{row['tenants']:,} tenants",
                "measured": f"{ratio['median']:.3f} x (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f})"
                + unsettled(ratio, 1 - CPU_SPREAD_TARGET, 1 + CPU_SPREAD_TARGET),
                "limit": f"within {CPU_SPREAD_TARGET:.0%}",
                "passed": abs(ratio["median"] - 1) <= CPU_SPREAD_TARGET,
                "why": f"{ratio['median']:.3f} x is outside {1 - CPU_SPREAD_TARGET:.2f}-"
                f"{1 + CPU_SPREAD_TARGET:.2f}; its interquartile range is "
                f"{ratio['q1']:.3f}-{ratio['q3']:.3f}.",
            }
        )
    mem = doc["memory"]
    rows.append(
        {
            "target": "memory per idle (resting) tenant",
            "scope": f"{mem['tenants']:,} tenants",
            "measured": f"{mem['idle_bytes_per_tenant'] / 1024:.1f} KiB",
            "limit": f"<= {IDLE_TARGET // 1024} KiB",
            "passed": mem["idle_bytes_per_tenant"] <= IDLE_TARGET,
        }
    )
    rows.append(
        {
            "target": "memory per active tenant",
            "scope": f"{mem['tenants']:,} tenants",
            "measured": f"{mem['active_bytes_per_tenant'] / 1024:.1f} KiB",
            "limit": f"<= {ACTIVE_TARGET // 1024} KiB",
            "passed": mem["active_bytes_per_tenant"] <= ACTIVE_TARGET,
        }
    )
    cold, cap = doc["cold_start"], doc["max_concurrent_fetches"]
    rows.append(
        {
            "target": "cold start: token requests at once never above the cap",
            "scope": f"{cold['tenants']:,} tenants",
            "measured": f"at most {cold['server_max_in_flight']} at once (server), "
            f"{cold['token_failures']} failed",
            "limit": f"<= {cap}",
            "passed": cold["server_max_in_flight"] <= cap and cold["token_failures"] == 0,
        }
    )
    routing = doc["routing"]
    rows.append(
        {
            "target": "each request carried its own merchant's token",
            "scope": f"{routing['requests']:,} requests, {routing['tenants']:,} tenants",
            "measured": f"{routing['tenants_whose_count_differs']} tenants whose server count "
            "differs from what was sent for them",
            "limit": "0",
            "passed": routing["tenants_whose_count_differs"] == 0,
        }
    )
    return rows


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's lines, for the report and ``docs/benchmarks.md``."""
    cfg, cpu, mem, cold = doc["config"], doc["cpu"], doc["memory"], doc["cold_start"]
    load = doc["load_average"]
    counts = ", ".join(f"{n:,}" for n in cfg["counts"])
    lines = [
        "## Many merchants (tenants)",
        "",
        f"One provider API, {counts} tenants (`tokens.add_tenants(...)`, `merchants.add(key, "
        "provider)`, one `tokens.session(merchants)`, `middlewares=tenant.middlewares` per "
        "request), against one fake provider in a child process that knows every merchant's "
        "credential. Run alone with `python -m benchmarks --tenants`: "
        f"{doc['duration_s']:.0f} s here, load average {load['start'][0]:.1f} at the start "
        f"and {load['end'][0]:.1f} at the end (other work shares the machine).",
        "",
        "**Per-request client cost, paired in one process.** The configurations stay open side "
        f"by side; each of {cfg['rotations']} rotations sends one batch of {cfg['batch']:,} "
        f"`GET` requests from {cfg['concurrency']} workers (pool {cfg['pool']}, tenants taken "
        "round-robin over all of them) through each, in a balanced rotating order (each in "
        "every place, and after every other, equally often). Client CPU per request is "
        "`time.process_time()` around a batch. *x 1 tenant* is "
        "the median over rotations of each batch's ratio to the 1-tenant batch of the same "
        "rotation, with the interquartile range: these ratios are the paired, judged figures; "
        "the absolute µs carry the machine's noise.",
        "",
        "| tenants | CPU µs/req, median [IQR] | x 1 tenant, median [IQR] | non-200 |",
        "|---|---|---|---|",
    ]
    for row in cpu["rows"].values():
        c, r = row["cpu_us_per_request"], row["ratio"]
        bad = sum(v for k, v in row["statuses"].items() if k != "200")
        lines.append(
            f"| {row['tenants']:,} | {c['median']:.1f} [{c['q1']:.1f}, {c['q3']:.1f}] | "
            f"{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}] | {bad} |"
        )
    routing = doc["routing"]
    lines += [
        "",
        f"The server counted API requests by the client whose token they carried: for "
        f"{routing['tenants']:,} tenants and {routing['requests']:,} requests, "
        f"{routing['tenants_whose_count_differs']} tenants' counts differ from what was sent "
        f"for them; {routing['token_calls']:,} token calls in all "
        f"({routing['tenants_with_more_than_one_token_call']} tenants asked more than once).",
        "",
        f"**Memory.** tracemalloc's growth per tenant, {mem['tenants']:,} tenants added to a "
        "fresh manager; profiles built before the first snapshot, the server in its own "
        "process. *Active*: each holds a (day-long) token. *Idle*: each rests (no request, "
        f"`idle_after={mem['idle_after_s']:g}`, tokens of {mem['token_lifetime_s']:g} s): token "
        "dropped, not refreshed. The active figure at each tenant count is in the growth "
        "table below.",
        "",
        "| per active tenant | per idle tenant |",
        "|---|---|",
        f"| {mem['active_bytes_per_tenant'] / 1024:.1f} KiB "
        f"| {mem['idle_bytes_per_tenant'] / 1024:.1f} KiB |",
        "",
        f"**Cold start.** {cold['tenants']:,} tenants added at once to an open manager, "
        f"`max_concurrent_fetches={cfg['max_concurrent_fetches']}`, "
        f"`fetches_per_second={cfg['fetches_per_second']:g}`; the fake holds each token request "
        f"{cfg['token_delay'] * 1e3:g} ms before it answers, so that requests sent together "
        "overlap there. *At once* is the most token requests the server was handling at the "
        "same time; the busiest second counts tokens the client received in any one second "
        "(a sliding window).",
        "",
        "| tenants | add() all | all tokens | token requests at once (cap) | busiest second | "
        "failed |",
        "|---|---|---|---|---|---|",
        f"| {cold['tenants']:,} | {cold['add_ms']:.0f} ms | {cold['all_tokens_s']:.2f} s | "
        f"{cold['server_max_in_flight']} ({cfg['max_concurrent_fetches']}) | "
        f"{cold['busiest_second']:,} | {cold['token_failures']} |",
        "",
        "**Growth by tenant count.** Each configuration's own build (largest first, under "
        "the same cap, timed without tracemalloc), tracemalloc's growth per active tenant "
        "with that many tenants (measured as in *Memory* above: a fresh manager, each tenant "
        "holding a day-long token, after the timed phases) and its paired per-request cost: "
        "how the cost of one more merchant grows. At the smallest counts the traced figure "
        "is larger: it also carries what does not grow with the tenants, shared out over few "
        "of them, mostly the first token requests' kept-alive connections (one per request "
        "in flight, at most 16 at once in these passes).",
        "",
        "| tenants | add() all | all first tokens | traced memory per active tenant "
        "| CPU µs/req, median | x 1 tenant |",
        "|---|---|---|---|---|---|",
    ]
    by_count = mem["active_bytes_per_tenant_by_count"]
    for n, built in sorted(doc["cold_start_by_count"].items(), key=lambda kv: int(kv[0])):
        row = cpu["rows"][n]
        lines.append(
            f"| {int(n):,} | {built['add_ms']:.0f} ms | {built['all_tokens_s']:.2f} s | "
            f"{by_count[n] / 1024:.1f} KiB | "
            f"{row['cpu_us_per_request']['median']:.1f} | {row['ratio']['median']:.3f} |"
        )
    lines += [""]
    lines += targets_table(doc["targets"])
    lines.append("")
    lines += why_failed(doc["targets"])
    return lines


def build(results: dict[str, Any]) -> dict[str, Any]:
    """The section's document: the figures and the judged targets."""
    return {**results, "targets": targets(results)}
