"""Testing a payment worker with aiopay_auth.testing, under pytest.

Run it with ``python -m pytest examples/test_worker.py``. The
``fake_provider`` fixture comes with aiopay_auth (a registered pytest
plugin); it runs on anyio's pytest plugin, which needs the asyncio backend.
"""

import time
from typing import Any

import aiohttp
import pytest
from yarl import URL

from aiopay_auth import RefreshPolicy, TokenManager, TokenUnavailableError
from aiopay_auth.providers import cm
from aiopay_auth.testing import Scripted, blackhole, provider_for
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only; usually in conftest.py


# The code under test: a worker step that charges one order.
async def charge(
    http: aiohttp.ClientSession, api: URL, amount: int
) -> dict[str, Any]:
    async with http.post(api / "payments", json={"amount": amount}) as resp:
        resp.raise_for_status()
        result: dict[str, Any] = await resp.json()
        return result


async def charge_for(
    http: aiohttp.ClientSession, api: URL, seconds: float
) -> int:
    """Charge orders back to back for *seconds*; return how many went."""
    done = 0
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        await charge(http, api, 100)
        done += 1
    return done


async def test_the_worker_charges(fake_provider: FakeProviderFactory) -> None:
    fake = await fake_provider("cm", lifetime=60)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder) as http:
            assert (await charge(http, fake.api_base, 100))["ok"]
    assert fake.token_calls == 1
    assert fake.api_unauthorized == 0


async def test_the_worker_rides_out_a_token_endpoint_outage(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=0.6)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        await holder.get()
        # The next two token calls fail: a 503 with an HTML page, then a reset.
        fake.queue(
            Scripted(status=503, body="<html>maintenance</html>"),
            Scripted(drop=True),
        )
        async with tokens.session(holder) as http:
            assert await charge_for(http, fake.api_base, 1.0) > 0
        assert holder.health().failures_by_kind == {
            "server_error": 1,
            "connection": 1,
        }
        assert holder.health().state == "fresh"
    assert fake.api_unauthorized == 0  # no charge ever failed


async def test_the_worker_survives_random_token_faults(
    fake_provider: FakeProviderFactory,
) -> None:
    fake = await fake_provider("cm", lifetime=0.5)
    # A fifth of the token calls fail at random (seeded, so reproducible).
    fake.fail_randomly(0.2, Scripted(status=500), Scripted(status=429), seed=7)
    async with TokenManager() as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder) as http:
            assert await charge_for(http, fake.api_base, 1.0) > 0
    assert fake.api_unauthorized == 0
    assert fake.api_expired == 0


async def test_the_worker_gets_a_typed_error_when_the_provider_is_down() -> (
    None
):
    policy = RefreshPolicy(fetch_timeout=0.2, wait_timeout=0.5)
    with blackhole() as dead:  # connections to it never complete
        profile = cm.provider(
            client_id="id", client_secret="secret", token_url=dead, api=dead
        )
        async with TokenManager(policy=policy) as tokens:
            holder = tokens.add(profile)
            async with tokens.session(holder) as http:
                with pytest.raises(TokenUnavailableError) as caught:
                    await charge(http, dead, 100)
            health = holder.health()
    assert caught.value.retryable
    assert health.state == "failing"
    assert health.last_error_kind == "timeout"
