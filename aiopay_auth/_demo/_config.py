"""What the demo runs: its options (plain data, light to import for the CLI's parser)."""

from __future__ import annotations

from typing import Final, Literal

import attrs


__all__ = ["EXIT_INTERRUPTED", "MAX_MERCHANTS", "MERCHANTS_LIFETIME", "DemoConfig", "ServerMode"]

ServerMode = Literal["child", "inline"]
"""Where the fake servers run: a child process, or this process's event loop."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""

MERCHANTS_LIFETIME = 30.0
"""Seconds each fake token lives with ``--merchants`` unless ``--lifetime`` says otherwise.

Thousands of merchants with 3-second tokens would ask for more tokens a
second than the set's rate allows.
"""

MAX_MERCHANTS: Final = 10_000
"""The most merchants ``demo --merchants`` serves: the scale the benchmarks measure."""


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
        fleet: With 1 or more, that many worker processes share tokens
            through a local ``redis-server`` (:func:`run_fleet_demo`), the
            workers and the pool split between them; 0 runs one process
            without Redis.
        merchants: With 1 or more, one CM.com API served for that many
            merchants through a tenant set (:func:`run_merchants_demo`);
            0 runs the usual five providers.
    """

    lifetime: float = 3.0
    duration: float = 20.0
    concurrency: int = 1000
    pool: int = 100
    servers: ServerMode = "child"
    fleet: int = 0
    merchants: int = 0
