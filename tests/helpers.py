"""Small helpers shared by the integration tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until *predicate* holds, failing the test after *within* seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"condition not reached within {within} s"
            raise AssertionError(msg)
        await anyio.sleep(0.005)


class ManualClock:
    """A monotonic clock that moves only when the test says so (``clock.now += 5``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def events(records: list[logging.LogRecord], name: str) -> list[tuple[int, dict[str, Any]]]:
    """The (level, fields) of every *name* event logged, in order."""
    found = []
    for record in records:
        fields = dict(getattr(record, "aiopay_auth", {}))
        if fields.pop("event", None) == f"aiopay_auth.{name}":
            found.append((record.levelno, fields))
    return found


ROOT = Path(__file__).resolve().parent.parent


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run *script* in a fresh interpreter on this checkout (as a user's program would)."""
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
