"""Your own aiohttp.ClientSession: FairPool first, then the token middleware.

Use this when the worker already builds its session (its own connector,
timeouts, tracing). ``FairPool`` admits requests to the connection pool in
arrival order and sits before the token middleware, so each request is
stamped only once a connection is free for it.
"""

import asyncio
import time

import aiohttp

from aiopay_auth import FairPool, TokenManager
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    async with (
        FakeProvider("cm", lifetime=1.0) as fake,
        TokenManager() as tokens,
    ):
        pay = tokens.add(provider_for(fake))
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=10),
            timeout=aiohttp.ClientTimeout(total=30),
            middlewares=[FairPool(), tokens.middleware(pay)],  # in this order
        )
        async with session:  # your session: you close it
            stop_at = time.monotonic() + 1.5  # a token and a half

            async def worker() -> int:
                ok = 0
                while time.monotonic() < stop_at:
                    async with session.get(fake.api_base / "payments") as resp:
                        ok += resp.status == 200
                return ok

            # 100 looping workers share 10 connections.
            done = await asyncio.gather(*(worker() for _ in range(100)))

        mean = sum(done) / len(done)
        print(f"{sum(done)} requests OK")
        print(f"per worker: fewest {min(done)}, mean {mean:.0f}")
        print(f"tokens issued: {fake.tokens_issued}")
        print(f"expired tokens sent: {fake.api_expired}")
        print(f"401s: {fake.api_unauthorized}")
        print(f"requests that waited for a token: {pay.health().waits}")


if __name__ == "__main__":
    asyncio.run(main())
