"""A child process with a pipe to it: started with ``spawn``, deaf to Ctrl-C.

The one copy of the spawn, message and reaping rules that the fake
providers' process (:class:`~aiopay_auth.testing.FakeProviderProcess`), the
demo's fleet workers and the benchmark's servers share.

Messages: the parent sends commands (plain strings, ``"stop"`` ends the
child); the child sends ``(kind, payload)`` pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import anyio


__all__ = ["ChildProcess", "receive"]

STOP = "stop"
"""The command that ends a child."""

_STOP_TIMEOUT = 5.0  # bound on a child's orderly exit, then on its termination


async def _readable(fd: int) -> None:
    """Wait until *fd* is readable, without blocking the loop or a thread."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def receive(conn: Connection) -> Any:
    """The next message on *conn*, once it is there.

    Raises:
        EOFError: The other end closed the pipe (its process went away).
    """
    await _readable(conn.fileno())
    return conn.recv()


def _start_deaf_to_ctrl_c(process: BaseProcess) -> None:
    """Start *process* with SIGINT ignored, as it stays for its whole life.

    A Ctrl-C reaches every process of the terminal's process group. Were
    the child to learn to ignore it only once running, a Ctrl-C during its
    start-up (while it imports) would kill it with a traceback. An ignored
    signal stays ignored across exec, and Python leaves it so.
    (Blocking SIGINT instead would not do: starting multiprocessing's
    resource tracker unblocks it.) A Ctrl-C in the few milliseconds of the
    start itself is lost. The parent handles Ctrl-C and stops the child in
    order.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread, where no Ctrl-C is handled anyway
        process.start()
        return
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class ChildProcess:
    """The parent's side of a child process that talks over a pipe.

    The child runs ``target(conn, *args)`` (*target* and *args* must
    pickle), with SIGINT ignored from birth; it should exit on ``"stop"``
    or when the pipe ends (the parent went away).

    Args:
        target: The child's function; its first argument is its end of the pipe.
        args: Its other arguments.
        name: The process's name, also used in error messages.
    """

    def __init__(self, target: Callable[..., None], *args: object, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=target, args=(child_conn, *args), name=name, daemon=True
        )
        _start_deaf_to_ctrl_c(self._process)
        child_conn.close()  # so that the child's exit reads as end-of-file here
        self._closed = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        pid = self._process.pid
        if pid is None:  # pragma: no cover - started in __init__
            msg = f"{self.name}: not started"
            raise RuntimeError(msg)
        return pid

    def send(self, command: str) -> None:
        """Send *command*; quietly nothing once the child has gone."""
        if not self._closed:
            with contextlib.suppress(OSError):
                self._conn.send(command)

    async def receive(self) -> tuple[str, Any]:
        """The child's next ``(kind, payload)`` message.

        Raises:
            EOFError: The child exited.
        """
        message: tuple[str, Any] = await receive(self._conn)
        return message

    async def expect(self, kind: str, timeout: float) -> Any:
        """The payload of the child's next message, which must be a *kind* one.

        Raises:
            RuntimeError: The child exited, sent something else, or nothing
                within *timeout* seconds.
        """
        try:
            with anyio.fail_after(timeout):
                message = await self.receive()
        except (EOFError, OSError, TimeoutError):
            msg = f"{self.name}: the process exited or did not answer"
            raise RuntimeError(msg) from None
        return self._payload(message, kind)

    def expect_blocking(self, kind: str, timeout: float) -> Any:
        """:meth:`expect`, blocking this thread (for code outside an event loop)."""
        try:
            if not self._conn.poll(timeout):
                raise TimeoutError
            message: tuple[str, Any] = self._conn.recv()
        except (EOFError, OSError, TimeoutError):
            msg = f"{self.name}: the process exited or did not answer"
            raise RuntimeError(msg) from None
        return self._payload(message, kind)

    def _payload(self, message: tuple[str, Any], kind: str) -> Any:
        got, payload = message
        if got != kind:  # pragma: no cover - a protocol error between our own processes
            msg = f"{self.name}: expected {kind!r}, got {got!r}"
            raise RuntimeError(msg)
        return payload

    async def aclose(self) -> None:
        """Tell the child to stop and wait for it; terminate, then kill, one that hangs."""
        if self._closed:
            return
        self.send(STOP)
        self._closed = True
        process = self._process
        with anyio.move_on_after(_STOP_TIMEOUT):
            await _readable(process.sentinel)
        self._reap()

    def close(self) -> None:
        """:meth:`aclose`, blocking this thread."""
        if self._closed:
            return
        self.send(STOP)
        self._closed = True
        self._process.join(_STOP_TIMEOUT)
        self._reap()

    def _reap(self) -> None:
        process = self._process
        if process.is_alive():  # pragma: no cover - only when the child hangs
            process.terminate()
            process.join(_STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
        process.join()
        process.close()
        self._conn.close()
