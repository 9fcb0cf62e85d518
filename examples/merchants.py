"""Many merchants on one provider API: one pool, one credential per request.

A platform holds one CM.com credential per merchant. One set of tenants
keeps all their tokens; one pooled session serves them all; each request
names its merchant with ``middlewares=``.
"""

import asyncio

import aiohttp

from aiopay_auth import Tenant, TenantRequiredError, TokenManager
from aiopay_auth.testing import FakeProvider, provider_for


async def charge(
    http: aiohttp.ClientSession, url: str, merchant: Tenant
) -> int:
    # The merchant is chosen here, per request; nothing else changes.
    async with http.post(
        url, json={"amount": 100}, middlewares=merchant.middlewares
    ) as resp:
        return resp.status


async def main() -> None:
    async with FakeProvider("cm", lifetime=3600) as fake:
        fake.token_delay = 0.05  # a token endpoint that takes 50 ms
        # One credential per merchant, as the provider issued them.
        creds = [fake.add_client() for _ in range(40)]
        url = str(fake.api_base / "payments")

        async with TokenManager() as tokens:
            merchants = tokens.add_tenants(
                "cm",
                api=fake.api_base,
                max_concurrent_fetches=4,  # the provider's limits
                fetches_per_second=200,
            )
            for client_id, secret in creds:
                profile = provider_for(
                    fake, client_id=client_id, client_secret=secret
                )
                merchants.add(client_id, profile)

            async with tokens.session(merchants, limit=20) as http:
                jobs = [charge(http, url, merchants[k]) for k in merchants]
                statuses = await asyncio.gather(*jobs)
                print(f"{statuses.count(200)} of {len(jobs)} charges got 200")

                try:  # no merchant chosen: an error, never a guess
                    await http.post(url, json={"amount": 1})
                except TenantRequiredError as err:
                    print("no merchant chosen:", type(err).__name__)

                # Merchant 1's secret is rotated: the provider takes both
                # for a while; its current token is served meanwhile, and
                # rotate() returns once a token came with the new secret.
                first, old_secret = creds[0]
                _, new_secret = fake.add_client(first)
                new = provider_for(
                    fake, client_id=first, client_secret=new_secret
                )
                await merchants.rotate(first, new)
                fake.remove_client(first, old_secret)  # now safe to revoke
                status = await charge(http, url, merchants[first])
                print("merchant-1 after rotation:", status)

                # Merchant 2 stops trading: no refresher, no token kept.
                await merchants.remove(creds[1][0])
                print("merchants left:", len(merchants))

        print(
            "token calls per merchant:",
            sorted(set(fake.token_calls_by_client.values())),
        )
        print("most token calls at once:", fake.max_token_calls_in_flight)
        print("charges by merchant-3:", fake.api_calls_by_client["merchant-3"])


if __name__ == "__main__":
    asyncio.run(main())
