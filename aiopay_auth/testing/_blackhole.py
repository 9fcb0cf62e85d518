"""A loopback address whose TCP connections never complete."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from yarl import URL


__all__ = ["blackhole"]


@contextlib.contextmanager
def blackhole() -> Iterator[URL]:
    """Yield an ``http://127.0.0.1:PORT`` URL that nobody ever answers.

    A socket listens with a zero backlog whose queue is already full, so
    the kernel drops further connection attempts: a client's connect
    hangs until its own timeout, as against a dead host, but without
    leaving loopback.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        host, port = listener.getsockname()
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, port))
            fillers.append(filler)
        yield URL.build(scheme="http", host=host, port=port)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
