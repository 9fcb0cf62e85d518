"""Waiting for another process's refresh: one subscription, a real sleep between polls.

Redis Cluster gets sharded pub/sub (``SSUBSCRIBE``, Redis 7.0+), which
stays on the node that owns the credential's slot, and plain ``SUBSCRIBE``
where the server has no sharded pub/sub (the store script then publishes
with ``PUBLISH``, which a cluster broadcasts); a single server or a
Sentinel-fronted primary gets plain ``SUBSCRIBE``. When no subscription
can be made, waiting falls back to sleeping between polls: slower to
notice, never busier.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio


if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster


__all__ = ["Announcements", "is_cluster", "publish_command"]


def is_cluster(client: Redis | RedisCluster) -> bool:
    """Whether *client* talks to a Redis Cluster."""
    try:
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - every redis-py with asyncio has it
        return False
    return isinstance(client, RedisCluster)


def publish_command(client: Redis | RedisCluster) -> str:
    """The command that announces a token: ``SPUBLISH`` on a cluster, else ``PUBLISH``."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


class Announcements:
    """One subscription to a credential's channel, for the length of one wait.

    Use :meth:`open`; :meth:`wait` then sleeps until an announcement or the
    end of the interval, whichever comes first, and always waits the whole
    interval when nothing was announced.
    """

    def __init__(self, pubsub: Any, *, sharded: bool) -> None:
        self._pubsub = pubsub
        self._sharded = sharded

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, client: Redis | RedisCluster, channel: str, *, timeout: float
    ) -> AsyncIterator[Announcements | None]:
        """Subscribe to *channel*; yields ``None`` (poll by sleeping) if that fails."""
        pubsubs: list[Any] = []
        found: Announcements | None = None
        try:
            for sharded in (True, False) if is_cluster(client) else (False,):
                pubsub: Any = client.pubsub()
                pubsubs.append(pubsub)
                found = cls(pubsub, sharded=sharded)
                try:
                    with anyio.fail_after(timeout):
                        await found.subscribe(channel)
                except Exception:  # no sharded pub/sub, or no Redis: try the next way
                    found = None
                if found is not None:
                    break
            yield found
        finally:
            for pubsub in pubsubs:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    with anyio.fail_after(timeout):
                        await pubsub.aclose()

    async def subscribe(self, channel: str) -> None:
        """Subscribe, and wait for the server's confirmation (or its error)."""
        if self._sharded:
            await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(channel)
        # redis-py sends the command without reading the answer: read it here,
        # so that a server without the command is found out now, not mid-wait.
        while True:
            message = await self._next(ignore_subscribe_messages=False, timeout=1.0)
            kind = message.get("type") if message is not None else None
            if isinstance(kind, bytes):
                kind = kind.decode()
            if isinstance(kind, str) and kind.endswith("subscribe"):
                return

    async def _next(self, *, ignore_subscribe_messages: bool, timeout: float) -> Any:
        if self._sharded:
            return await self._pubsub.get_sharded_message(
                ignore_subscribe_messages=ignore_subscribe_messages, timeout=timeout
            )
        return await self._pubsub.get_message(
            ignore_subscribe_messages=ignore_subscribe_messages, timeout=timeout
        )

    async def wait(self, seconds: float) -> bool:
        """Wait up to *seconds* for an announcement; ``True`` if one came.

        Subscription confirmations are skipped without ending the wait.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = await self._next(ignore_subscribe_messages=True, timeout=left)
            if message is not None:
                return True
            # A confirmation, or a reader that returned early: never spin.
            await anyio.sleep(min(max(deadline - time.monotonic(), 0.0), 0.01))
        return False
