"""The demo's report: the summary as a table, as JSON, and the progress line (pure functions)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ..testing import ServerCounters
from ._results import FleetSummary, MerchantsSummary, Summary, exit_status


__all__ = [
    "fleet_summary_to_dict",
    "format_fleet_table",
    "format_merchants_table",
    "format_progress",
    "format_table",
    "merchants_summary_to_dict",
    "summary_to_dict",
]

# What the JSON form gives of each server's counters.
_SERVER_COUNTERS = ("token_calls", "api_calls", "api_unauthorized", "api_expired")


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
        "servers": {
            name: {key: getattr(counters, key) for key in _SERVER_COUNTERS}
            for name, counters in summary.servers.items()
        },
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


def merchants_summary_to_dict(summary: MerchantsSummary) -> dict[str, Any]:
    """The merchants' summary as a JSON-ready object (``demo --merchants N --json``).

    ``by_merchant`` gives, per merchant, the requests answered 2xx
    (``ok``), the API requests the server accepted with its token
    (``server_api_calls``) and its token requests at the server
    (``server_token_calls``): the first two are equal for every merchant
    when each request carried its own merchant's token.

    Args:
        summary: The demo's results.

    Returns:
        A dict of plain JSON types.
    """
    config, clients, server = summary.config, summary.clients, summary.server
    served, asked = clients.api_calls_by_client, clients.token_calls_by_client
    return {
        "config": {
            "merchants": summary.merchants,
            "lifetime": config.lifetime,
            "duration": config.duration,
            "concurrency": config.concurrency,
            "pool": config.pool,
            "servers": config.servers,
            "max_concurrent_fetches": summary.cap,
            "fetches_per_second": summary.fetches_per_second,
        },
        "elapsed": round(summary.elapsed, 3),
        "interrupted": summary.interrupted,
        "merchants": summary.merchants,
        "requests": summary.requests,
        "requests_per_second": round(summary.requests / summary.elapsed, 1)
        if summary.elapsed > 0
        else 0.0,
        "failed": summary.failed,
        "errors": dict(summary.errors),
        "token_fetches": summary.token_fetches,
        "server_token_calls": server.token_calls,
        "max_token_calls_at_once": clients.max_token_calls_in_flight,
        "unauthorized": server.api_unauthorized,
        "expired": server.api_expired,
        "misrouted": len(summary.misrouted()),
        "merchants_without_requests": summary.without_requests(),
        "max_wait_ms": round(summary.max_wait * 1000, 1),
        "by_merchant": {
            key: {
                "ok": ok,
                "server_api_calls": served.get(key, 0),
                "server_token_calls": asked.get(key, 0),
            }
            for key, ok in zip(summary.keys, summary.ok, strict=True)
        },
        "exit_status": summary.exit_status(),
    }


def format_merchants_table(summary: MerchantsSummary) -> str:
    """The merchants' summary as text: one line of figures per subject, then the verdict.

    Args:
        summary: The demo's results.

    Returns:
        The lines joined by newlines, without a trailing newline.
    """
    data = merchants_summary_to_dict(summary)
    config = summary.config
    rows = [
        ("merchants", f"{data['merchants']:,} (one tenant set, one pooled session)"),
        (
            "requests",
            f"{data['requests']:,} ({data['requests_per_second']:,.0f} req/s), "
            f"{data['failed']:,} failed",
        ),
        (
            "token calls",
            f"{data['token_fetches']:,} sent, {data['server_token_calls']:,} at the server",
        ),
        (
            "token calls at once",
            f"at most {data['max_token_calls_at_once']} at the server "
            f"(cap {summary.cap}, {summary.fetches_per_second:g} a second)",
        ),
        (
            "401s at server",
            f"{data['unauthorized']:,} ({data['expired']:,} for an expired token)",
        ),
        (
            "wrong merchant",
            f"{data['misrouted']:,} merchants whose requests the server counted "
            "under another merchant's token",
        ),
        ("longest token wait", f"{data['max_wait_ms']:,.1f} ms"),
    ]
    if data["merchants_without_requests"]:
        rows.append(("no request", f"{data['merchants_without_requests']:,} merchants"))
    width = max(len(name) for name, _ in rows)
    lines = [
        f"aiopay-auth demo --merchants {summary.merchants:,}: one CM.com API, "
        f"{config.concurrency:,} workers, pool {config.pool:,}, tokens live {config.lifetime:g} s, "
        f"ran {summary.elapsed:.1f} s" + (" (interrupted)" if summary.interrupted else ""),
        "",
        *(f"{name.ljust(width)}  {value}" for name, value in rows),
        "",
        *(f"! {count:,} x {description}" for description, count in summary.errors),
    ]
    status = summary.exit_status()
    if status == 0:
        lines.append(
            "OK: every request carried its own merchant's token; no failure, no expired token, "
            "token calls within the cap."
        )
    elif status == 1:
        lines.append(
            f"FAILED: {summary.failed:,} failed requests, {summary.server.api_expired:,} refused "
            f"for an expired token, {len(summary.misrouted()):,} merchants served with another's "
            f"token, at most {summary.clients.max_token_calls_in_flight} token calls at once "
            f"(cap {summary.cap})."
        )
    return "\n".join(lines)
