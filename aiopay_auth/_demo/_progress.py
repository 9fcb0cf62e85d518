"""The demo's progress line on stderr, and its Ctrl-C handling (first stops, second cancels)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

import anyio

from ._report import format_progress


__all__ = ["LIVE_INTERVAL", "Progress", "interrupt_handler", "report_progress"]

LIVE_INTERVAL = 0.25
"""Seconds between refreshes of the live progress line (a terminal)."""

_LOG_INTERVAL = 5.0  # seconds between progress lines when stderr is not a TTY


class Progress(Protocol):
    """What the progress reporter and the Ctrl-C handler need of a run."""

    started: float
    stopping: bool
    interrupted: bool

    def requests(self) -> int: ...

    def failed(self) -> int: ...

    def fetches(self) -> int: ...


async def report_progress(run: Progress, stream: TextIO, live: bool) -> None:
    """Write a progress line every so often until cancelled."""
    interval = LIVE_INTERVAL if live else _LOG_INTERVAL
    last_time, last_requests = run.started, 0
    try:
        while True:
            await anyio.sleep(interval)
            now, requests = time.monotonic(), run.requests()
            rate = (requests - last_requests) / (now - last_time) if now > last_time else 0.0
            last_time, last_requests = now, requests
            line = format_progress(now - run.started, requests, rate, run.fetches(), run.failed())
            stream.write(f"\r{line}\x1b[K" if live else line + "\n")
            stream.flush()
    finally:
        if live:
            stream.write("\r\x1b[K")
            stream.flush()


@contextlib.contextmanager
def interrupt_handler(run: Progress, on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """First Ctrl-C ends the run early (with a summary); the second cancels everything."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def interrupted() -> None:
        if run.stopping and task is not None:
            task.cancel()
        run.stopping = run.interrupted = True
        if on_stop is not None:
            on_stop()

    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        installed = False
    else:
        installed = True
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)  # asyncio.run's own handler, if any
