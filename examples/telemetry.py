"""OpenTelemetry: observable metrics per provider, a span per token request.

Needs the extra: ``pip install 'aiopay-auth[otel]' opentelemetry-sdk``. The
SDK's in-memory reader and exporter stand in for a real backend here.
"""

import asyncio

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from aiopay_auth import TokenManager
from aiopay_auth.otel import instrument, traced_source
from aiopay_auth.testing import FakeProvider, provider_for


async def main() -> None:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))

    manager = TokenManager(token_source=traced_source(tracing))
    async with FakeProvider("cm", lifetime=60.0) as fake, manager as tokens:
        holder = tokens.add(provider_for(fake))
        async with tokens.session(holder) as http:
            meters = MeterProvider(metric_readers=[reader])
            instrument(tokens, sessions=[http], meter_provider=meters)
            await holder.get()
            fake.revoke_all()  # a 401, a fresh token, a resend
            async with http.get(fake.api_base / "payments/42") as resp:
                print(f"GET: {resp.status}")
            data = reader.get_metrics_data()

    assert data is not None
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        for point in metric.data.data_points:  # type: ignore[attr-defined]
            value = int(point.value)  # whole seconds for the gauges
            print(f"{metric.name} {dict(point.attributes)} = {value}")
    for span in spans.get_finished_spans():
        attributes = span.attributes or {}
        grant = attributes["aiopay_auth.grant"]
        print(f"span {span.name} {grant} {attributes['aiopay_auth.outcome']}")


if __name__ == "__main__":
    asyncio.run(main())
