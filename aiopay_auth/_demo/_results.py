"""The demo's results: per-provider rows, the summary, and how they add up (plain data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .._health import Health
from ..testing import ClientCounters, ServerCounters
from ._config import EXIT_INTERRUPTED, DemoConfig


__all__ = [
    "FleetRow",
    "FleetSummary",
    "MerchantsSummary",
    "ProviderRow",
    "Summary",
    "Tally",
    "combine_fleet_rows",
    "combine_rows",
    "exit_status",
    "split",
]

_MAX_ERROR_KINDS = 5  # distinct failure descriptions kept per provider


@attrs.frozen(kw_only=True)
class ProviderRow:
    """One provider's client-side results.

    Attributes:
        provider: The provider's name.
        server: The fake server it talks to (several providers may share one).
        requests: Requests the workers sent to its API.
        failed: Of those, how many failed (non-2xx after the middleware's
            recovery, or an exception).
        fetches: Token requests its refresher sent (``holder.health().fetches``).
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
    def of(cls, provider: str, server: str, tally: Tally, stats: Health) -> ProviderRow:
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


@attrs.frozen(kw_only=True)
class MerchantsSummary:
    """What ``demo --merchants N`` reports.

    Attributes:
        config: What was run.
        elapsed: Seconds from the first request to the last response.
        cap: The set's most token requests at once (``max_concurrent_fetches``).
        fetches_per_second: The set's most token requests started a second.
        keys: The merchants' client ids, in order.
        ok: Requests answered 2xx, by merchant (the order of :attr:`keys`).
        requests: Requests the workers sent.
        failed: Of those, how many failed (non-2xx, or an exception).
        errors: Distinct failure descriptions with their counts.
        token_fetches: Token requests the merchants' holders sent.
        max_wait: The longest any request waited for a token, in seconds.
        server: The fake server's counters.
        clients: The fake server's counts by merchant, and its peak of
            token requests at once.
        interrupted: Whether Ctrl-C ended the run early.
    """

    config: DemoConfig
    elapsed: float
    cap: int
    fetches_per_second: float
    keys: tuple[str, ...]
    ok: tuple[int, ...]
    requests: int
    failed: int
    errors: tuple[tuple[str, int], ...] = ()
    token_fetches: int
    max_wait: float
    server: ServerCounters
    clients: ClientCounters
    interrupted: bool = False

    @property
    def merchants(self) -> int:
        """How many merchants were served."""
        return len(self.keys)

    def misrouted(self) -> tuple[str, ...]:
        """Merchants whose accepted API requests at the server differ from their 2xx answers.

        The server counts each API request it accepted by the merchant whose
        token it carried; a request sent with another merchant's token counts
        for that one instead.
        """
        served = self.clients.api_calls_by_client
        return tuple(
            key for key, ok in zip(self.keys, self.ok, strict=True) if served.get(key, 0) != ok
        )

    def without_requests(self) -> int:
        """Merchants no request was answered for (a short run, or a failing one)."""
        return sum(1 for ok in self.ok if not ok)

    def exit_status(self) -> int:
        """The demo's exit status.

        Returns:
            130 when Ctrl-C ended the run; 1 when a request failed, was
            refused for an expired token or went out with another
            merchant's token, or when the server saw more token requests at
            once than the cap; else 0.
        """
        if self.interrupted:
            return EXIT_INTERRUPTED
        bad = (
            self.failed
            or self.server.api_expired
            or self.misrouted()
            or self.clients.max_token_calls_in_flight > self.cap
        )
        return 1 if bad else 0


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


def exit_status(summary: Summary) -> int:
    """The demo's exit status.

    Returns:
        130 when Ctrl-C ended the run, 1 when any request failed or any
        request was refused for an expired token, else 0.
    """
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 1 if summary.failed or summary.expired else 0


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


def split(total: int, parts: int) -> tuple[int, ...]:
    """*total* shared as evenly as can be between *parts*, at least 1 each."""
    return tuple(max(1, total // parts + (index < total % parts)) for index in range(parts))


def combine_rows(rows: Sequence[ProviderRow]) -> ProviderRow:
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


def combine_fleet_rows(rows: Sequence[FleetRow]) -> FleetRow:
    """One provider's fleet rows from every process, summed."""
    return FleetRow(
        provider=rows[0].provider,
        shared_hits=sum(row.shared_hits for row in rows),
        alone=sum(row.alone for row in rows),
        stores=tuple(store for row in rows for store in row.stores),
    )
