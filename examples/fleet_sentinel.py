"""Two workers share one token through a Sentinel-fronted Redis primary.

The fleet takes the client Sentinel hands out for the primary; after a
failover that client finds the new primary by itself. Set
``REDIS_SENTINEL`` to a Sentinel's ``host:port`` and
``REDIS_SENTINEL_SERVICE`` to the name it monitors.
"""

import asyncio
import os

from cryptography.fernet import Fernet
from redis.asyncio.sentinel import Sentinel

from aiopay_auth import TokenManager
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    host, port = os.environ["REDIS_SENTINEL"].rsplit(":", 1)
    sentinel = Sentinel([(host, int(port))], socket_timeout=0.5)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        os.environ["REDIS_SENTINEL_SERVICE"], socket_timeout=0.5
    )
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
            await asyncio.sleep(3)  # a refresh cycle or so
            print("store:", one.health().store, two.health().store)
    finally:
        await client.aclose(close_connection_pool=True)
        for each in sentinel.sentinels:
            await each.aclose()


if __name__ == "__main__":
    asyncio.run(main())
