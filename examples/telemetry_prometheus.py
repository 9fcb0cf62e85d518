"""OpenTelemetry metrics scraped by Prometheus, via the OTel exporter.

Needs ``pip install 'aiopay-auth[otel]' opentelemetry-sdk
opentelemetry-exporter-prometheus``.
"""

import asyncio

import aiohttp
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from aiopay_auth import TokenManager
from aiopay_auth.otel import instrument
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    # Serves /metrics; use a fixed port such as 9464 in production.
    server, thread = start_http_server(0, addr="127.0.0.1")
    port = server.server_port
    meters = MeterProvider(metric_readers=[PrometheusMetricReader()])
    try:
        async with FakeProvider("cm") as fake, TokenManager() as tokens:
            holder = tokens.add(provider_for(fake))
            instrument(tokens, meter_provider=meters)
            await holder.get()
            async with (
                aiohttp.ClientSession() as scraper,
                scraper.get(f"http://127.0.0.1:{port}/metrics") as resp,
            ):
                text = await resp.text()
    finally:
        meters.shutdown()
        server.shutdown()
        thread.join()
    for line in text.splitlines():
        if line.startswith("aiopay_auth_token_fetches"):
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
