"""Pay-me / Alignet: environments, the password grant and refresh tokens.

With the ``offline_access`` scope (in the default scope) Pay-me issues a
refresh token, and the SDK uses it for every later refresh. The fake here
issues one-second tokens so that a refresh happens within the example.
"""

import asyncio

from aiopay_auth import TokenManager
from aiopay_auth.providers import payme
from aiopay_auth.testing import FakeProvider


async def main() -> None:
    for environment, facts in payme.ENVIRONMENTS.items():
        print(
            f"{environment:>14}: {facts.token_url} audience={facts.audience}"
            f" ALG-API-VERSION={facts.api_version}"
        )

    async with FakeProvider("payme", lifetime=1.0) as fake:
        pay = payme.provider(
            environment="development",
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            username=fake.username,  # with a password: the password grant
            password=fake.password,
            token_url=fake.token_url,  # default: the environment's
            api=fake.api_base,  # default: the environment's audience
        )
        print("scope:", pay.scope)

        async with TokenManager() as tokens:
            holder = tokens.add(pay)
            first = await holder.get()
            print(
                "first token has a refresh token:", bool(first.refresh_token)
            )

            # From now on the fake refuses the password: the next token can
            # only come through the refresh grant.
            fake.password = "changed-at-the-provider"
            await asyncio.sleep(first.lifetime * 0.75)  # past its refresh
            second = await holder.get()

        print("refreshed before expiry:", second.issued_at < first.expires_at)
        rotated = second.refresh_token != first.refresh_token
        print("refresh token rotated:", rotated)
        print(f"token calls: {fake.token_calls}, refused: {fake.rejected}")


if __name__ == "__main__":
    asyncio.run(main())
