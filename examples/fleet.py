"""Two workers share one token through Redis, as a fleet of processes would.

Each ``TokenManager`` here stands for one worker process: in production
each process runs the same code with its own manager and the same Redis.
Set ``REDIS_URL`` to a Redis you may write to (``redis://127.0.0.1:6379``).
"""

import asyncio
import os

import redis.asyncio
from cryptography.fernet import Fernet

from aiopay_auth import TokenManager
from aiopay_auth.fleet import RedisFleet
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    # One key for the whole fleet, e.g. from your secret store.
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
            print("tokens issued for two workers:", fake.tokens_issued)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
