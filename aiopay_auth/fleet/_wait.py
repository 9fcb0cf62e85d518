"""Waiting for another process's refresh: one subscription, a real sleep between polls.

Redis Cluster gets sharded pub/sub (``SSUBSCRIBE``, Redis 7.0+), which
stays on the node that owns the credential's slot; a single server or a
Sentinel-fronted primary gets plain ``SUBSCRIBE``. When the subscription
cannot be made, waiting falls back to sleeping between polls: slower to
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
        sharded = is_cluster(client)
        pubsub: Any = client.pubsub()
        subscribed = False
        try:
            with anyio.fail_after(timeout):
                if sharded:
                    await pubsub.ssubscribe(channel)
                else:
                    await pubsub.subscribe(channel)
            subscribed = True
        except Exception:  # any failure means: poll without it
            subscribed = False
        try:
            yield cls(pubsub, sharded=sharded) if subscribed else None
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                with anyio.fail_after(timeout):
                    await pubsub.aclose()

    async def wait(self, seconds: float) -> bool:
        """Wait up to *seconds* for an announcement; ``True`` if one came.

        Subscription confirmations are skipped without ending the wait.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._sharded:
                message = await self._pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=left
                )
            else:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=left
                )
            if message is not None:
                return True
            # A confirmation, or a reader that returned early: never spin.
            await anyio.sleep(min(max(deadline - time.monotonic(), 0.0), 0.01))
        return False
