"""Shared fixtures: the asyncio backend, real Redis set-ups on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from .endpoints import RawEndpoint, WebEndpoint
from .redis_server import RedisClusterServers, RedisSentinelServers, RedisServer


RedisSetup = RedisServer | RedisClusterServers | RedisSentinelServers


@pytest.fixture(name="anyio_backend", scope="session")
def _anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(name="records")
def _records() -> Iterator[list[logging.LogRecord]]:
    """Every record the library logs during the test, at DEBUG and up."""
    handler = _Collect()
    logger = logging.getLogger("aiopay_auth")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture(name="redis_server", scope="module")
def _redis_server() -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the tests of one module."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(name="client")
async def _client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the module's redis-server, which it empties first."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(name="redis_cluster", scope="module")
def _redis_cluster() -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster on 127.0.0.1 for the tests of one module."""
    cluster = RedisClusterServers()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(name="redis_sentinel", scope="module")
def _redis_sentinel() -> Iterator[RedisSentinelServers]:
    """A primary fronted by a Sentinel on 127.0.0.1 for the tests of one module."""
    servers = RedisSentinelServers()
    try:
        servers.start()
        yield servers
    finally:
        servers.shutdown()


@pytest.fixture(name="redis_setup", params=["single", "cluster", "sentinel"])
def _redis_setup(request: pytest.FixtureRequest) -> RedisSetup:
    """Each Redis set-up in turn, emptied, every node running."""
    name = {"single": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}
    setup: RedisSetup = request.getfixturevalue(name[request.param])
    for node in _nodes(setup):
        if node.process is None:  # an earlier test failed while it was stopped
            setup.restart_node(node)
    setup.flushall()
    return setup


def _nodes(setup: RedisSetup) -> list[RedisServer]:
    if isinstance(setup, RedisClusterServers):
        return setup.nodes
    if isinstance(setup, RedisSentinelServers):
        return [setup.primary]
    return [setup]


@pytest.fixture(name="endpoint")
async def _endpoint() -> AsyncIterator[WebEndpoint]:
    """An independent aiohttp.web token endpoint and API on 127.0.0.1 (tests/endpoints.py)."""
    server = WebEndpoint()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(name="raw")
async def _raw() -> AsyncIterator[RawEndpoint]:
    """A raw asyncio TCP token endpoint on 127.0.0.1 that answers scripted bytes."""
    server = RawEndpoint()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
