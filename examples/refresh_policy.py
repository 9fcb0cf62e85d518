"""Tuning RefreshPolicy: when tokens are refreshed, how failures back off.

The policy is plain arithmetic, so its effect can be printed before it is
used: the refresh point for a few token lifetimes, and the retry delays
after failures in a row.
"""

import asyncio
import random

from aiopay_auth import RefreshPolicy, TokenManager
from aiopay_auth.testing import FakeProvider, provider_for


LIFETIMES = (1, 30, 300, 3600, 86400)


def show(name: str, policy: RefreshPolicy) -> None:
    print(name)
    for lifetime in LIFETIMES:
        margin = policy.margin(lifetime)
        print(
            f"{lifetime:>7} s token: refreshed {margin:5.1f} s before expiry"
        )
    rng = random.Random(1)
    delays = [policy.backoff(n, rng=rng) for n in range(1, 9)]
    print("  retry after 1..8 failures:", " ".join(f"{d:.1f}" for d in delays))


async def main() -> None:
    show("default", RefreshPolicy())
    # Refresh hour-long tokens 10 minutes ahead; give up on a request after
    # 5 s without a token; retry a failed fetch within 10 s at most.
    tuned = RefreshPolicy(max_margin=600, wait_timeout=5, backoff_max=10)
    show("tuned", tuned)

    async with (
        FakeProvider("cm", lifetime=3600) as fake,
        TokenManager(policy=tuned) as tokens,
    ):
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        margin = tuned.margin(token.lifetime)
        latest = token.lifetime - margin
        earliest = latest - margin * tuned.jitter
        print(f"live token: refresh due {earliest:.0f} to {latest:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
