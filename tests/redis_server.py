"""Real Redis set-ups on 127.0.0.1, started and stopped by the tests.

* :class:`RedisServer`: one ``redis-server``, no persistence
  (:class:`aiopay_auth.testing.RedisServer`, plus what the tests read).
* :class:`RedisClusterServers`: a 3-master Redis Cluster (no replicas).
* :class:`RedisSentinelServers`: one primary fronted by one Sentinel.

Each uses free loopback ports and its own temporary directory, and can stop
and restart a single node, as a failure in production would.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aiopay_auth import testing
from aiopay_auth.testing._redis import free_port, redis_binary


if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster


SENTINEL_SERVICE = "aiopay"
"""The name under which the Sentinel monitors its primary."""

Kind = Literal["single", "cluster", "sentinel"]
"""Which Redis set-up: one server, a 3-master cluster, a Sentinel-fronted primary."""


def client_for(
    kind: str, port: int, *, connect_timeout: float = 0.5
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """The redis-py client an application would build for *kind*.

    *port* is the server's, a cluster node's, or the Sentinel's.
    """
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    if kind == "cluster":
        return redis.asyncio.cluster.RedisCluster(
            host="127.0.0.1", port=port, socket_connect_timeout=connect_timeout
        )
    if kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", port)], socket_connect_timeout=connect_timeout
        )
        primary: redis.asyncio.Redis = sentinel.master_for(
            SENTINEL_SERVICE, socket_connect_timeout=connect_timeout
        )
        return primary
    return redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=connect_timeout)


async def close_client(client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster) -> None:
    """Close *client* and its connections (a Sentinel's client does not own its pool)."""
    import redis.asyncio.cluster

    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.aclose()
        return
    await client.aclose(close_connection_pool=True)
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in manager.sentinels if manager is not None else []:
        await sentinel.aclose()  # the connections that asked where the primary is


class RedisServer(testing.RedisServer):
    """:class:`aiopay_auth.testing.RedisServer`, with what the tests read of it."""

    def restart_node(self, node: RedisServer) -> None:
        """Start this stopped server again."""
        self.start()

    kind: Kind = "single"

    @property
    def client_port(self) -> int:
        """The port a client is given."""
        return self.port

    def node_for(self, key: str) -> RedisServer:
        """The server that holds *key*: this one."""
        return self

    def stats(self) -> dict[str, int]:
        """Connections received and commands processed so far."""
        return _sum_stats([self])

    def flushall(self) -> None:
        """Delete every key."""
        _call(self.port, "FLUSHALL")

    def info(self, section: str = "stats") -> dict[str, str]:
        """``INFO section`` as a dict, read with a raw socket (no client pool involved)."""
        reply = _call(self.port, "INFO", section).decode()
        pairs = (line.split(":", 1) for line in reply.splitlines() if ":" in line)
        return {name: value.strip() for name, value in pairs}


class RedisClusterServers:
    """A 3-master Redis Cluster on 127.0.0.1 (no replicas), in temp dirs.

    A stopped node keeps its ``nodes.conf``, so :meth:`restart` brings it back
    into the cluster with its slots. With ``cluster-require-full-coverage``
    (the default), the cluster refuses commands while a node is down.
    """

    kind: Kind = "cluster"

    def __init__(
        self, masters: int = 3, node_timeout_ms: int = 1000, extra: tuple[str, ...] = ()
    ) -> None:
        self.cli = redis_binary("redis-cli")
        self.nodes: list[RedisServer] = []
        for port in _free_cluster_ports(masters):
            # fmt: off
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                *extra,
            )
            # fmt: on
            self.nodes.append(RedisServer(port=port, extra=extra))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def client_port(self) -> int:
        return self.nodes[0].port

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(  # noqa: S603 - a fixed binary and fixed args
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        self.wait_ok()

    def restart_node(self, node: RedisServer) -> None:
        """Start a stopped node again and wait for the cluster to be whole."""
        node.start()
        self.wait_ok()

    def wait_ok(self, within: float = 20.0) -> None:
        """Return once every node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in _call(n.port, "CLUSTER", "INFO") for n in self.nodes):
                return
            time.sleep(0.05)
        msg = "the Redis Cluster did not reach cluster_state:ok"
        raise RuntimeError(msg)

    def node_for(self, key: str) -> RedisServer:
        """The master that serves *key*."""
        slot = int(_call(self.nodes[0].port, "CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            for line in _call(node.port, "CLUSTER", "NODES").decode().splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for span in fields[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return node
        msg = f"no node serves slot {slot}"
        raise RuntimeError(msg)

    def stats(self) -> dict[str, int]:
        """Connections received and commands processed, summed over the nodes."""
        return _sum_stats(self.nodes)

    def flushall(self) -> None:
        for node in self.nodes:
            _call(node.port, "FLUSHALL")

    def shutdown(self) -> None:
        """Stop every node for good and remove their directories."""
        for node in self.nodes:
            node.shutdown()


class RedisSentinelServers:
    """One primary ``redis-server`` fronted by one Sentinel (quorum 1)."""

    kind: Kind = "sentinel"

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.sentinel_port = free_port()
        self.sentinel_dir = Path(tempfile.mkdtemp(prefix="aiopay-sentinel-"))
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.primary.url

    @property
    def client_port(self) -> int:
        return self.sentinel_port

    def node_for(self, key: str) -> RedisServer:
        """The server that holds *key*: the primary."""
        return self.primary

    def start(self) -> None:
        self.primary.start()
        config = self.sentinel_dir / "sentinel.conf"
        config.write_text(
            f"bind 127.0.0.1\nport {self.sentinel_port}\ndir {self.sentinel_dir}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
        )
        self.sentinel = subprocess.Popen(  # noqa: S603 - a fixed binary and fixed args
            [self.primary.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                reply = _call(
                    self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
                )
            except OSError:
                reply = b""
            if str(self.primary.port).encode() in reply:
                return
            time.sleep(0.05)
        msg = "redis sentinel did not start"
        raise RuntimeError(msg)

    def stats(self) -> dict[str, int]:
        return _sum_stats([self.primary])

    def flushall(self) -> None:
        _call(self.primary.port, "FLUSHALL")

    def restart_node(self, node: RedisServer) -> None:
        """Start the stopped primary again."""
        node.start()

    def shutdown(self) -> None:
        """Stop the Sentinel and the primary for good, and remove their directories."""
        if self.sentinel is not None:
            self.sentinel.terminate()
            self.sentinel.wait(timeout=10)
            self.sentinel = None
        self.primary.shutdown()
        shutil.rmtree(self.sentinel_dir, ignore_errors=True)


_MONITORING = frozenset({"info", "ping", "publish", "subscribe", "cluster"})
"""Commands a Sentinel (or these tests' stats reads) send on their own."""


def _sum_stats(nodes: list[RedisServer]) -> dict[str, int]:
    """Connections received, commands processed, and client commands but monitoring.

    ``client_commands`` leaves out what a Sentinel sends by itself (PING, INFO,
    its hello PUBLISH) and the tests' own INFO reads; the fleet never sends
    those, but its waiting members SUBSCRIBE on a single server, so that one is
    counted apart, as ``subscribes``.
    """
    totals = {
        "total_connections_received": 0,
        "total_commands_processed": 0,
        "client_commands": 0,
        "subscribes": 0,
    }
    for node in nodes:
        info = node.info("stats")
        for name in ("total_connections_received", "total_commands_processed"):
            totals[name] += int(info[name])
        for line in _call(node.port, "INFO", "commandstats").decode().splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, _, fields = line[len("cmdstat_") :].partition(":")
            calls = int(fields.split(",")[0].split("=")[1])
            if name == "subscribe":
                totals["subscribes"] += calls
            if name.split("|")[0] not in _MONITORING:
                totals["client_commands"] += calls
    return totals


def _call(port: int, *args: str) -> bytes:
    """One command over a fresh socket (RESP), its reply's payload."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
    head, _, rest = data.partition(b"\r\n")
    if head[:1] == b"$":
        return rest[: int(head[1:])]
    if head[:1] == b"*":  # an array of bulk strings: joined by spaces
        return b" ".join(part for part in rest.split(b"\r\n") if part and part[:1] != b"$")
    if head[:1] == b"-":
        raise OSError(head[1:].decode())
    return head[1:]


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n")
    if not sep:
        return False
    if head[:1] == b"$":
        size = int(head[1:])
        return size < 0 or len(rest) >= size + 2
    if head[:1] == b"*":
        count = int(head[1:])
        return count <= 0 or rest.count(b"\r\n") >= 2 * count
    return True


def _free_cluster_ports(count: int) -> list[int]:
    """Ports free both for clients and for the cluster bus (port + 10000)."""
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(20000, 40000)
        if port in chosen or not all(_bindable(p) for p in (port, port + 10000)):
            continue
        chosen.append(port)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
