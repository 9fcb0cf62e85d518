"""httpx side by side: aiopay_auth's httpx adapter, Authlib, httpx-auth and raw httpx, paired.

Every client is an ``httpx.AsyncClient`` with the same pool
(``max_connections`` = ``max_keepalive_connections`` = the concurrency, so
that no request queues inside httpx: see the pool-queueing caveat in
``docs/howto/httpx.md``), against the benchmark's fake providers in a child
process (:class:`~benchmarks.server.ServerProcess`, pinned to its own core
when there are two). Scenarios:

* ``raw``: raw httpx, a token fetched once and set as a static client
  header (the base of the ratios). It talks to the long-token server in both variants.
* ``aiopay``: ``aiopay_auth.httpx.BearerAuth(holder).client(...)``, with
  the same ``limits``: its gate of as many places, each with a pooled
  connection of its own (at most *concurrency* connections, like the others).
* ``authlib``: Authlib's ``AsyncOAuth2Client`` (client credentials,
  ``token_endpoint``, ``update_token``, automatic renewal), opened by
  :func:`benchmarks.peers.open_authlib`.
* ``httpx-auth``: httpx-auth's ``OAuth2ClientCredentials`` on an
  ``httpx.AsyncClient`` (:func:`benchmarks.peers.open_httpx_auth`).

Each of the last three runs twice: on hour-long tokens (``-1h``: the hot
path alone; each library with its defaults) and on 2-second tokens
(``-2s``: refreshes during the run). On 2-second tokens, Authlib's default
``leeway`` (60 s) and httpx-auth's ``early_expiry`` (30 s) exceed the
token's life, which would make them fetch a token for every request; they
are given the margin aiopay_auth's default policy takes for such a token
(half its life, 1 s) instead.

**Paired.** Every scenario's client is opened once in this one process,
each with its own client id (so that the server counts token calls per
scenario), and warmed up. Then, in each rotation, each sends one batch of a
fixed number of ``GET /api/payments`` from *concurrency* looping workers,
in a balanced rotating order (:func:`~benchmarks.rotations.rotation_order`),
so that the machine's noise falls
on each alike. Every figure relative to ``raw`` is the median over
rotations of the batch's ratio to the ``raw`` batch of the same rotation,
with the interquartile range. The server's counts of API requests refused
for an expired token and of 401s are read around each batch, so each is
the batch's own (only one scenario sends API requests at a time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import httpx

from aiopay_auth.httpx import BearerAuth

from .peers import _HTTPX_TIMEOUT, httpx_limits, httpx_sender, open_authlib, open_httpx_auth
from .rotations import Batches as _Batches
from .rotations import iqr_text as _iqr
from .rotations import latency_ms as _latency_ms
from .rotations import ms_text as _ms
from .rotations import quartiles as _quartiles
from .rotations import rotation_order, targets_table
from .scenarios import Client, Scenario, drive, fetch_token, recorded_holder
from .server import CLIENT_SECRET, Endpoint, ServerProcess


@dataclass(frozen=True)
class HttpxConfig:
    """What the httpx section runs."""

    concurrency: int = 32
    """Looping workers per batch; also every client's ``max_connections``."""
    batch: int = 160
    """Requests per batch."""
    rotations: int = 14
    """One balanced square for the seven clients (:func:`~benchmarks.rotations.rotation_order`)."""
    warmup: int = 64
    """Requests each client sends before the first rotation (fills its pool)."""
    long_lifetime: float = 3600.0
    short_lifetime: float = 2.0
    peer_margin: float = 1.0
    """Authlib's ``leeway`` and httpx-auth's ``early_expiry`` on the short tokens."""
    max_seconds: float = 60.0
    """Time bound of one batch (a harness guard, not expected to be hit)."""


FULL_HTTPX = HttpxConfig()
QUICK_HTTPX = HttpxConfig(concurrency=8, batch=8, rotations=2, warmup=8)

_RAW = "raw"
_LONG, _SHORT = "hx-long", "hx-short"


# --- the two clients that are not in peers.py ---------------------------------------


@asynccontextmanager
async def open_raw_httpx(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """Raw httpx: a token fetched once, then a static ``Authorization`` client header."""
    async with aiohttp.ClientSession() as token_session:
        token, _ = await fetch_token(token_session, endpoint)
    async with httpx.AsyncClient(
        headers={"Authorization": "Bearer " + token},
        limits=httpx_limits(limit),
        timeout=_HTTPX_TIMEOUT,
    ) as client:
        yield Client(httpx_sender(client, endpoint))


@asynccontextmanager
async def open_aiopay_httpx(endpoint: Endpoint, limit: int) -> AsyncIterator[Client]:
    """aiopay_auth on httpx as documented: ``BearerAuth(holder).client(...)``."""
    async with recorded_holder(endpoint) as rec:
        auth = BearerAuth(rec.holder)
        async with auth.client(limits=httpx_limits(limit), timeout=_HTTPX_TIMEOUT) as client:
            yield Client(httpx_sender(client, endpoint), fetches=rec.log, holder=rec.holder)


def scenarios(cfg: HttpxConfig) -> tuple[Scenario, ...]:
    """Raw httpx first (the base of every ratio), then each client on both token lifetimes."""
    short = cfg.short_lifetime
    return (
        Scenario(_RAW, "raw httpx, static Authorization header", "baseline", _LONG, open_raw_httpx),
        Scenario(
            "aiopay-1h", "aiopay_auth BearerAuth.client()", "aiopay", _LONG, open_aiopay_httpx
        ),
        Scenario("authlib-1h", "Authlib AsyncOAuth2Client", "peer", _LONG, open_authlib),
        Scenario(
            "httpx-auth-1h", "httpx-auth OAuth2ClientCredentials", "peer", _LONG, open_httpx_auth
        ),
        Scenario(
            "aiopay-2s",
            f"aiopay_auth BearerAuth.client(), {short:g}-s tokens",
            "aiopay",
            _SHORT,
            open_aiopay_httpx,
        ),
        Scenario(
            "authlib-2s",
            f"Authlib AsyncOAuth2Client, {short:g}-s tokens, leeway={cfg.peer_margin:g}",
            "peer",
            _SHORT,
            functools.partial(open_authlib, leeway=cfg.peer_margin),
        ),
        Scenario(
            "httpx-auth-2s",
            f"httpx-auth OAuth2ClientCredentials, {short:g}-s tokens, "
            f"early_expiry={cfg.peer_margin:g}",
            "peer",
            _SHORT,
            functools.partial(open_httpx_auth, early_expiry=cfg.peer_margin),
        ),
    )


def _client_id(name: str) -> str:
    return f"hx-{name}"


def servers(cfg: HttpxConfig) -> dict[str, float]:
    """The fake providers this section needs, by name, and their tokens' lifetimes."""
    return {_LONG: cfg.long_lifetime, _SHORT: cfg.short_lifetime}


def clients(cfg: HttpxConfig) -> list[tuple[str, str]]:
    """The client ids (one per scenario) those providers must accept."""
    return [(_client_id(s.name), CLIENT_SECRET) for s in scenarios(cfg)]


# --- the paired run -------------------------------------------------------------------


async def _paired(server: ServerProcess, cfg: HttpxConfig, progress: bool) -> dict[str, Any]:
    chosen = scenarios(cfg)
    names = [s.name for s in chosen]
    batches = {name: _Batches() for name in names}
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for s in chosen:
            endpoint = dataclasses.replace(server.endpoints[s.server], client_id=_client_id(s.name))
            clients[s.name] = await stack.enter_async_context(s.open(endpoint, cfg.concurrency))
        for name in names:  # warm-up: fill each pool, touch each code path
            await drive(
                clients[name].send,
                requests=cfg.warmup,
                concurrency=cfg.concurrency,
                timeout=cfg.max_seconds,
            )
        by_name = {s.name: s for s in chosen}
        for rotation in range(cfg.rotations):
            for name in rotation_order(names, rotation):
                gc.collect()
                before = server.stats(by_name[name].server)
                loop = await drive(
                    clients[name].send,
                    requests=cfg.batch,
                    concurrency=cfg.concurrency,
                    timeout=cfg.max_seconds,
                )
                counted = server.stats(by_name[name].server) - before
                batches[name].add(loop, counted)
            if progress:
                line = "  ".join(f"{n} {batches[n].rps[-1]:,.0f}" for n in names)
                print(f"httpx rotation {rotation + 1}/{cfg.rotations}  req/s  {line}", flush=True)
        published = {
            name: len(c.fetches.published) for name, c in clients.items() if c.fetches is not None
        }
    elapsed = time.perf_counter() - started
    token_calls = {
        srv: dict(server.client_stats(srv).token_calls_by_client) for srv in (_LONG, _SHORT)
    }
    rows = {}
    base = batches[_RAW]
    for s in chosen:
        b = batches[s.name]

        def ratio(mine: list[float], theirs: list[float]) -> dict[str, float]:
            return _quartiles([m / t for m, t in zip(mine, theirs, strict=True)])

        rows[s.name] = {
            "label": s.label,
            "kind": s.kind,
            "server": s.server,
            "rps": _quartiles(b.rps),
            "rps_ratio": ratio(b.rps, base.rps),
            "cpu_us_per_request": _quartiles(b.cpu_us),
            "cpu_ratio": ratio(b.cpu_us, base.cpu_us),
            "p99_ratio": ratio(b.p99_ms, base.p99_ms),
            "latency_ms": _latency_ms(b.latencies),
            "requests": len(b.latencies),
            "statuses": dict(b.statuses),
            "status_401": b.statuses.get("401", 0),
            "errors": sum(n for k, n in b.statuses.items() if k not in ("200", "401")),
            "server_expired": b.expired,
            "server_unauthorized": b.unauthorized,
            "token_calls": token_calls[s.server].get(_client_id(s.name), 0),
            "tokens_published": published.get(s.name),
            "batch_wall_s": b.wall_s,
            "batches_cut": b.timed_out,
            "per_rotation": {"rps": b.rps, "cpu_us": b.cpu_us, "p99_ms": b.p99_ms},
        }
    return {"rows": rows, "elapsed_s": elapsed}


def run_httpx(
    cfg: HttpxConfig,
    *,
    pin: bool = True,
    progress: bool = True,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """Run the paired batches and return the figures.

    Against *server* when given (started with :func:`servers` and
    :func:`clients` among its own), else against fake providers started
    for this section alone.
    """
    started = time.time()
    load_at_start = os.getloadavg()
    if server is None:
        with ServerProcess(pin=pin, lifetimes=servers(cfg), clients=clients(cfg)) as own:
            paired = asyncio.run(_paired(own, cfg, progress))
            pinned = own.pinned
    else:
        paired = asyncio.run(_paired(server, cfg, progress))
        pinned = server.pinned
    return {
        "config": asdict(cfg),
        "pinned": pinned,
        "duration_s": time.time() - started,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        **paired,
    }


# --- verdicts and markdown ------------------------------------------------------------


def _versus(rows: dict[str, Any], mine: str, theirs: str, key: str) -> dict[str, float]:
    """Per-rotation ratio of *mine* to *theirs* on *key* (``rps`` or ``p99_ms``)."""
    a, b = rows[mine]["per_rotation"][key], rows[theirs]["per_rotation"][key]
    return _quartiles([x / y for x, y in zip(a, b, strict=True)])


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's point 5, judged per token lifetime."""
    rows, out = doc["rows"], []
    for suffix in ("1h", "2s"):
        ours = f"aiopay-{suffix}"
        for peer in (f"authlib-{suffix}", f"httpx-auth-{suffix}"):
            if ours not in rows or peer not in rows:
                continue
            tput = _versus(rows, ours, peer, "rps")
            out.append(
                {
                    "target": "throughput above the peer (paired)",
                    "scope": f"{ours} vs {peer}",
                    "measured": f"{tput['median']:.2f} x (IQR {tput['q1']:.2f}-{tput['q3']:.2f})",
                    "limit": "> 1",
                    "passed": tput["median"] > 1,
                }
            )
            tail = _versus(rows, ours, peer, "p99_ms")
            out.append(
                {
                    "target": "p99 latency below the peer's (paired)",
                    "scope": f"{ours} vs {peer}",
                    "measured": f"{tail['median']:.2f} x (IQR {tail['q1']:.2f}-{tail['q3']:.2f})",
                    "limit": "< 1",
                    "passed": tail["median"] < 1,
                }
            )
        if ours in rows:
            row = rows[ours]
            out.append(
                {
                    "target": "no request sent with an expired token, no 401",
                    "scope": ours,
                    "measured": f"{row['server_expired']} expired, {row['status_401']} 401s",
                    "limit": "0, 0",
                    "passed": row["server_expired"] == 0 and row["status_401"] == 0,
                }
            )
    return out


def build(results: dict[str, Any]) -> dict[str, Any]:
    """The section's document: the figures and the judged targets."""
    return {**results, "targets": targets(results)}


def _versions(doc: dict[str, Any]) -> list[str]:
    """A line naming the measured versions, when the section ran alone (``--httpx``)."""
    machine = doc.get("machine")
    if not machine:
        return []  # a full run names them in its Machine section
    v = machine["versions"]
    return [
        f"Python {machine['python']}, httpx {v['httpx']}, Authlib {v['authlib']}, "
        f"httpx-auth {v['httpx-auth']}, aiopay_auth {v['aiopay-auth']} "
        f"(source {machine['revision']}).",
        "",
    ]


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's lines, for the report and ``docs/benchmarks.md``."""
    cfg, load = doc["config"], doc["load_average"]
    c = cfg["concurrency"]
    lines = [
        "## httpx",
        "",
        "The same fake providers in a child process (pinned to its own core), the same "
        f"`GET /api/payments` from {c} looping workers, through `httpx.AsyncClient`s that all "
        f"have the same pool: `max_connections={c}` (the concurrency, so that no request "
        "queues inside httpx; see the pool-queueing caveat in "
        "[Tokens on httpx requests](howto/httpx.md)). `raw`: a token fetched once and set as "
        "a static client header (the base of the ratios; behind httpx's own pool, which the "
        "adapter's gate avoids, so not a limit); `aiopay`: `BearerAuth(holder).client(...)` with "
        "the same `limits` (its gate's places each have a connection of their own: at most "
        f"{c} connections too); "
        "`authlib`: `AsyncOAuth2Client` (client credentials, `token_endpoint`, "
        "`update_token`, automatic renewal); `httpx-auth`: `OAuth2ClientCredentials` as the "
        f"client's `auth`. `-1h`: tokens of {cfg['long_lifetime'] / 3600:g} hour (no refresh "
        "during the run: the hot path), each library with its defaults. "
        f"`-2s`: tokens of {cfg['short_lifetime']:g} s, refreshed during the run; Authlib's "
        "default `leeway` (60 s) and httpx-auth's `early_expiry` (30 s) exceed such a token's "
        "life and would fetch a token for every request, so they get "
        f"{cfg['peer_margin']:g} s, the margin aiopay_auth's default policy takes for it. "
        "`raw` uses the hour-long tokens in both cases. Run alone with "
        f"`python -m benchmarks --httpx`: {doc['duration_s']:.0f} s here, load average "
        f"(`uptime`) {load['start'][0]:.2f} at the start and {load['end'][0]:.2f} at the end "
        "(other work shares the machine).",
        "",
        *_versions(doc),
        "**Paired in one process.** All seven clients are opened once, side by side, each "
        "with its own client id, and warmed up; each of "
        f"{cfg['rotations']} rotations then sends one batch of {cfg['batch']:,} requests "
        "through each, in a balanced rotating order (each client in every place, and after "
        "every other, equally often). The *x raw* columns are the "
        "median over rotations of each batch's ratio to the `raw` batch of the same rotation, "
        "with the interquartile range: these ratios are the paired figures, and the targets "
        "below are judged on the same per-rotation ratios taken between aiopay_auth and each "
        "peer. req/s and CPU µs (`time.process_time()` around a batch) are medians [IQR] over "
        "batches, and carry the machine's noise; latency is over all batches' requests "
        "pooled (not paired), the wait for a connection included. *Token calls* are the "
        f"server's count for the client id over the whole section ({doc['elapsed_s']:.0f} s; "
        "aiopay_auth refreshes in the background while other clients' batches run, the peers "
        "only when one of their own requests finds the token due); *expired* is the server's "
        "count of requests refused for an expired token during the scenario's batches.",
        "",
        "| scenario | req/s | x raw | CPU µs/req | x raw CPU | p50 / p99 / max ms | "
        "p99 x raw | token calls | expired | 401s | other errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in doc["rows"].items():
        lat = row["latency_ms"]
        lines.append(
            f"| {name} | {_iqr(row['rps'], ',.0f')} | {_iqr(row['rps_ratio'], '.3f')} | "
            f"{_iqr(row['cpu_us_per_request'], '.0f')} | {_iqr(row['cpu_ratio'], '.3f')} | "
            f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} | "
            f"{_iqr(row['p99_ratio'], '.2f')} | {row['token_calls']} | "
            f"{row['server_expired']} | {row['status_401']} | {row['errors']} |"
        )
    lines += [
        "",
        *targets_table(doc["targets"], "measured (median [IQR] of per-rotation ratios)"),
    ]
    lines.append("")
    return lines
