"""Any RFC 6749 server: the generic profile.

Client credentials by default, sent as HTTP Basic (RFC 6749 §2.3.1); the
password grant when a username and password are given; a refresh token
whenever the server issues one.
"""

import asyncio

from aiopay_auth import TokenManager
from aiopay_auth.providers import generic
from aiopay_auth.testing import FakeProvider


async def main() -> None:
    async with FakeProvider("rfc6749", lifetime=900) as fake:
        service = generic.provider(
            name="acme",
            token_url=fake.token_url,  # "https://auth.acme.test/oauth/token"
            api=fake.api_base,  # "https://api.acme.test"
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            scope="payments:write",
        )
        user = generic.provider(
            name="acme-user",
            token_url=fake.token_url,
            api=fake.api_base / "users",  # a longer prefix: this one wins
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            username=fake.username,
            password=fake.password,
            client_auth="body",
        )
        for p in (service, user):
            print(
                f"{p.name}: grant={p.grant_type} client_auth={p.client_auth}"
            )

        async with TokenManager() as tokens:
            acme = tokens.add(service)
            acme_user = tokens.add(user)
            async with tokens.session(acme, acme_user) as http:
                payments = fake.api_base / "payments"
                async with http.post(payments, json={"amount": 7}) as resp:
                    print("POST /api/payments:", resp.status)
                async with http.get(fake.api_base / "users/me") as resp:
                    print("GET /api/users/me:", resp.status)
            token = await acme_user.get()
            print("acme-user got a refresh token:", bool(token.refresh_token))
        print(f"token calls: {fake.token_calls}, refused: {fake.rejected}")


if __name__ == "__main__":
    asyncio.run(main())
