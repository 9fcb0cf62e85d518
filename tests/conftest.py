"""Shared fixtures: the asyncio backend, a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_server import RedisServer


@pytest.fixture(name="anyio_backend", scope="session")
def _anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"


@pytest.fixture(name="redis_server", scope="module")
def _redis_server() -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the tests of one module."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
