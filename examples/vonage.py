"""Vonage Contact Center (VCC) Payment API: a region, and HTTP Basic.

VCC runs one identity server per account region. The profile derives the
token URL and the API origin from the region and the gateway (the current
``cc.vonage.com`` one by default, or the legacy ``newvoicemedia.com``);
``token_url=`` and ``api=`` point it at a loopback fake here. They move
together: a token URL and an API on different gateways is a ConfigError,
whichever of them were passed.
"""

import asyncio

from aiopay_auth import ConfigError, TokenManager, build_token_request
from aiopay_auth.providers import vonage
from aiopay_auth.testing import FakeProvider


async def main() -> None:
    for gateway in vonage.GATEWAYS:
        for region in vonage.REGIONS:
            token_url = vonage.token_url_for(region, gateway)
            api = vonage.api_base_for(region, gateway)
            print(f"{gateway:>6} {region:>4}: {token_url} -> {api}")
    try:  # the token URL moved alone: the API would stay on the other gateway
        vonage.provider(
            region="emea",
            client_id="id",
            client_secret="secret",
            token_url=vonage.token_url_for("emea", "legacy"),
        )
    except ConfigError as exc:
        print("token_url moved alone:", type(exc).__name__)

    async with FakeProvider("vonage", lifetime=7200) as fake:
        pay = vonage.provider(
            region="emea",
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            client_auth="basic",  # or "body", the default: VCC takes both
            token_url=fake.token_url,  # default: token_url_for("emea")
            api=fake.api_base,  # default: api_base_for("emea")
        )
        request = build_token_request(pay)  # what the refresher will send
        print("token request headers:", [name for name, _ in request.headers])
        print("scope:", pay.scope)

        async with TokenManager() as tokens:
            holder = tokens.add(pay)
            payment = fake.api_base / "payments"
            async with (
                tokens.session(holder) as http,
                http.post(payment, json={"amount": 5}) as resp,
            ):
                print("payment request:", resp.status)
            token = holder.current
            assert token is not None
            print(
                f"{holder.name}: token_type={token.token_type!r}"
                f" lifetime={token.lifetime:.0f}s"
            )


if __name__ == "__main__":
    asyncio.run(main())
