"""What the demo runs: its options (plain data, light to import for the CLI's parser)."""

from __future__ import annotations

from typing import Literal

import attrs


__all__ = ["EXIT_INTERRUPTED", "DemoConfig", "ServerMode"]

ServerMode = Literal["child", "inline"]
"""Where the fake servers run: a child process, or this process's event loop."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


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
    """

    lifetime: float = 3.0
    duration: float = 20.0
    concurrency: int = 1000
    pool: int = 100
    servers: ServerMode = "child"
    fleet: int = 0
