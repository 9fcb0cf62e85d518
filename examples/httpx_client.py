"""Tokens on httpx requests: aiopay_auth.httpx.BearerAuth.

Needs the extra: pip install 'aiopay-auth[httpx]'. ``auth.client()``
builds an ``httpx.AsyncClient`` with the auth and its request hook, which
decides on every redirect hop whether it carries the token, and puts the
pool behind a first-come, first-served gate of ``limit`` places, so that
no request waits inside httpx after its token was stamped.
"""

import asyncio
from collections.abc import AsyncIterator

from aiopay_auth import TokenManager
from aiopay_auth.httpx import BearerAuth
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    async with FakeProvider("cm") as fake, TokenManager() as tokens:
        pay = tokens.add(provider_for(fake))
        auth = BearerAuth(pay)
        # 10 connections; the 11th request waits in line, unstamped.
        async with auth.client(limit=10, timeout=30) as http:
            url = f"{fake.api_base}/payments"

            async def charge(n: int) -> int:
                resp = await http.post(url, json={"order": n})
                return resp.status_code

            done = await asyncio.gather(*(charge(n) for n in range(50)))
            print(f"{done.count(200)} of 50 payments got 200")

            # The provider drops its tokens: one refresh, one resend.
            fake.revoke_all()
            resp = await http.post(url, json={"order": 50})
            calls = fake.token_calls
            print(
                f"after a revocation: {resp.status_code}, token calls: {calls}"
            )

            async def stream() -> AsyncIterator[bytes]:
                yield b'{"order": 51}'

            # A body that can be sent only once gets the 401 itself. (A
            # second revocation within the first one's backoff, 0.5 s,
            # would look like an API refusing fresh tokens too.)
            await asyncio.sleep(0.6)
            fake.revoke_all()
            resp = await http.post(url, content=stream())
            print(
                f"a stream after a revocation: {resp.status_code}, not resent"
            )

            resp = await http.get(f"{fake.base_url}/echo-headers")  # not API
            print(
                f"/echo-headers got a token: {'authorization' in resp.json()}"
            )
            stats = pay.health()
            print(f"recoveries: {stats.recoveries}, ", end="")
            print(f"unreplayable: {stats.unreplayable}")


if __name__ == "__main__":
    asyncio.run(main())
