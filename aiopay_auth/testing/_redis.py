"""A throwaway ``redis-server`` on a free loopback port, for tests, demos and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Self


__all__ = ["RedisServer"]

_START_TIMEOUT = 10.0  # seconds for redis-server to answer PING
_STOP_TIMEOUT = 10.0  # seconds for it to exit once terminated


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, with no persistence, in its own temp dir.

    It stays in the caller's process group, so a Ctrl-C in the terminal
    reaches it too. :meth:`stop` and :meth:`start` again play a Redis
    outage; :meth:`shutdown` (or leaving the ``with`` block) ends it for
    good and removes its directory. The blocking calls take milliseconds.

    Args:
        port: Its port; a free one by default.
        extra: More ``redis-server`` options (e.g. cluster mode).

    Attributes:
        binary: The ``redis-server`` found on the ``PATH``.
        port: Its port.
        workdir: Its working directory.
        process: The running process, or ``None`` when stopped.

    Raises:
        RuntimeError: No ``redis-server`` on the ``PATH``.
    """

    def __init__(self, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = redis_binary("redis-server")
        self.port = port or free_port()
        self.workdir = tempfile.mkdtemp(prefix="aiopay-redis-")
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``: what ``redis.asyncio.Redis.from_url`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """Its command line."""
        # fmt: off
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
            "--protected-mode", "yes",
            *self.extra,
        ]
        # fmt: on

    def start(self) -> None:
        """Start it and return once it answers ``PING``.

        Raises:
            RuntimeError: It exited or did not answer within 10 s (port taken?).
        """
        process = self.process = subprocess.Popen(  # noqa: S603 - a fixed binary and fixed args
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        msg = f"redis-server on port {self.port} did not start (is the port taken?)"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop it (its directory stays, for :meth:`start` again)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when it hangs
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop it and start it again."""
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """Stop it for good and remove its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start it."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Shut it down."""
        self.shutdown()


def redis_binary(name: str) -> str:
    """The path of *name* (``redis-server``, ``redis-cli``) on the ``PATH``.

    Raises:
        RuntimeError: It is not installed.
    """
    binary = shutil.which(name)
    if binary is None:
        msg = f"{name} is not installed (apt-get install redis-server, which brings redis-cli too)"
        raise RuntimeError(msg)
    return binary


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
