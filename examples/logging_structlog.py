"""aiopay_auth's events through structlog, with the application's processors.

Configure structlog first, then call ``aiopay_auth.use_structlog()`` once.
"""

import asyncio
import logging

import structlog

import aiopay_auth
from aiopay_auth import TokenManager
from aiopay_auth.testing import FakeProvider, Scripted, provider_for


async def main() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    aiopay_auth.use_structlog()

    async with (
        FakeProvider("vonage", lifetime=1.0) as fake,
        TokenManager() as tokens,
    ):
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        # The next token call is throttled; the refresher retries.
        fake.queue(Scripted(status=429, headers={"Retry-After": "0"}))
        await asyncio.sleep(token.lifetime)  # outlive the first token
        await holder.get()


if __name__ == "__main__":
    asyncio.run(main())
