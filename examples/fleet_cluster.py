"""Two workers share one token through a Redis Cluster.

Every key of one credential carries the same hash tag, so the cluster keeps
them in one slot; announcements use sharded pub/sub (Redis 7.0+). Set
``REDIS_CLUSTER_URL`` to any node of a cluster you may write to
(``redis://127.0.0.1:7000``).
"""

import asyncio
import os

from cryptography.fernet import Fernet
from redis.asyncio.cluster import RedisCluster

from aiopay_auth import TokenManager
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    client = RedisCluster.from_url(os.environ["REDIS_CLUSTER_URL"])
    await (
        client.initialize()
    )  # learn the slot map at start-up, not in the first refresh
    fleet = RedisFleet(client, encryption_key=Fernet.generate_key())
    try:
        async with (
            FakeProvider("cm", lifetime=2) as fake,
            TokenManager(token_source=fleet.wrap) as first,
            TokenManager(token_source=fleet.wrap) as second,
        ):
            one = first.add(provider_for(fake))
            two = second.add(provider_for(fake))
            a, b = await one.get(), await two.get()
            print("both workers use the same token:", a.header == b.header)
            slots = {
                await client.cluster_keyslot(key)
                for key in fleet.keys(one.provider)
            }
            print("token, lease and channel in one slot:", len(slots) == 1)
            await asyncio.sleep(3)  # a refresh cycle or so
            print("store:", one.health().store, two.health().store)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
