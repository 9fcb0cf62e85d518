"""Reading a provider's health: a snapshot with no I/O, cheap to take.

The example walks one provider through its states (starting, fresh,
degraded, closed) and a 401 that the middleware recovers from, and prints
the snapshot at each step as a metrics exporter would read it.
"""

import asyncio

from aiopay_auth import Health, HealthState, TokenHolder, TokenManager
from aiopay_auth.testing import FakeProvider, Scripted, provider_for


def report(step: str, health: Health) -> None:
    left = "-" if health.expires_in is None else f"{health.expires_in:.1f}s"
    print(f"{step:<15} {health.state:<9} expires_in={left:<5}", end=" ")
    print(f"fetches={health.fetches} failures={health.failures}", end=" ")
    print(f"401s={health.invalidations} resent={health.recoveries}")
    if health.last_error:
        print(f"{'':<15} {health.last_error_kind}: {health.last_error}")


async def until(holder: TokenHolder, state: HealthState) -> None:
    while holder.state != state:
        await asyncio.sleep(0.01)


async def main() -> None:
    async with FakeProvider("cm", lifetime=2.0) as fake:
        fake.token_delay = 0.1  # a slow token endpoint
        async with TokenManager() as tokens:
            holder = tokens.add(provider_for(fake))
            report("just added", holder.health())
            await holder.get()
            report("first token", holder.health())

            # The next refresh, about 1 s in, fails twice.
            fake.queue(Scripted(status=500), Scripted(status=502))
            await until(holder, "degraded")
            report("refresh failed", holder.health())
            await until(holder, "fresh")
            report("recovered", holder.health())

            # The provider revokes the token: a 401, a refresh, a resend.
            fake.revoke_all()
            url = fake.api_base / "payments/42"
            async with tokens.session(holder) as http, http.get(url) as resp:
                print(f"{'':<15} GET after revocation: {resp.status}")
            report("after a 401", holder.health())
        report("closed", holder.health())


if __name__ == "__main__":
    asyncio.run(main())
