"""CM.com Online Payments: client credentials, one token for the worker.

The profile is built exactly as in production; only ``token_url=`` and
``api=`` point it at a loopback fake of CM.com.
"""

import asyncio

from aiopay_auth import TokenManager
from aiopay_auth.providers import cm
from aiopay_auth.testing import FakeProvider


async def main() -> None:
    async with FakeProvider("cm", lifetime=3600) as fake:
        # In production: cm.provider(client_id=..., client_secret=...),
        # and requests go below cm.API_BASE.
        pay = cm.provider(
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            token_url=fake.token_url,  # default: cm.TOKEN_URL
            api=fake.api_base,  # default: cm.API_BASE
        )
        checkout_url = (
            fake.api_base / "paymentmethods/checkout/v1/transactions"
        )
        print("in production the token comes from", cm.TOKEN_URL)

        async with TokenManager() as tokens:
            holder = tokens.add(pay)
            async with tokens.session(holder, limit=20) as http:

                async def checkout(order: int) -> int:
                    body = {"amount": 1000 + order, "currency": "EUR"}
                    async with http.post(checkout_url, json=body) as resp:
                        return resp.status

                # 200 checkouts at once, on a cold start.
                checkouts = (checkout(n) for n in range(200))
                statuses = await asyncio.gather(*checkouts)

        print(f"{statuses.count(200)} of {len(statuses)} checkouts got 200")
        print(
            f"token calls: {fake.token_calls}, 401s: {fake.api_unauthorized}"
        )


if __name__ == "__main__":
    asyncio.run(main())
