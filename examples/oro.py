"""OroCommerce: the back-office and the storefront API as two providers.

Their tokens are not interchangeable, so each API gets its own provider,
and one session stamps each token only on its own API's paths.
"""

import asyncio

from aiopay_auth import TokenHolder, TokenManager
from aiopay_auth.providers import oro
from aiopay_auth.testing import FakeProvider


def stamped_by(header: str | None, *holders: TokenHolder) -> str:
    """Which provider's token an Authorization header carried."""
    for holder in holders:
        if holder.latest is not None and holder.latest.header == header:
            return holder.name
    return "no"


async def main() -> None:
    async with FakeProvider("oro", lifetime=3600) as fake:
        app_url = fake.base_url  # in production: "https://shop.example.com"
        backoffice = oro.provider(
            app_url=app_url,
            client_id=fake.client_id,
            client_secret=fake.client_secret,
        )
        storefront = oro.provider(
            app_url=app_url,
            client_id=fake.storefront_client_id,
            client_secret=fake.client_secret,
            application="storefront",
        )
        for profile in (backoffice, storefront):
            token_path, api_path = profile.token_url.path, profile.api[0].path
            print(
                f"{profile.name}: token from {token_path}, used on {api_path}"
            )

        async with TokenManager() as tokens:
            back = tokens.add(backoffice)
            shop = tokens.add(storefront)
            headers = {"Accept": oro.API_ACCEPT}
            async with tokens.session(back, shop, headers=headers) as http:
                for path in ("admin/api/orders", "api/products"):
                    async with http.get(app_url / path) as resp:
                        who = stamped_by(
                            fake.last_api_authorization, back, shop
                        )
                    print(f"GET /{path}: {resp.status}, {who} token")

                # Outside both APIs, no token is sent.
                async with http.get(app_url / "echo-headers") as resp:
                    echoed = await resp.json()
                print(
                    "GET /echo-headers got a token:", "authorization" in echoed
                )


if __name__ == "__main__":
    asyncio.run(main())
