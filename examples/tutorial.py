"""Tutorial: a first token and a first request, against a fake provider.

Run it with ``python examples/tutorial.py``: no credentials and no
network, only 127.0.0.1.
"""

import asyncio

from aiopay_auth import TokenManager
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    # Step 1: start a fake CM.com token endpoint and API on 127.0.0.1.
    async with FakeProvider("cm", lifetime=60) as fake:
        print("fake CM.com token endpoint:", fake.token_url)

        # Step 2: open a token manager and add the provider to it.
        profile = provider_for(fake)  # cm.provider(...) aimed at the fake
        async with TokenManager() as tokens:
            holder = tokens.add(profile)

            # Step 3: wait for the first token (fetched in the background).
            token = await holder.get()
            print(
                f"first token: fingerprint={token.fingerprint}"
                f" lifetime={token.lifetime:.0f}s"
            )

            # Step 4: send the first request; the session stamps the token.
            async with tokens.session(holder, limit=10) as http:
                url = fake.api_base / "paymentmethods/checkout/v1/transactions"
                async with http.post(url, json={"amount": 1000}) as resp:
                    print("first request:", resp.status, await resp.json())

            # Step 5: ask how the provider is doing.
            health = holder.health()
            print(f"health: state={health.state} fetches={health.fetches}")


if __name__ == "__main__":
    asyncio.run(main())
