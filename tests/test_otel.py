"""OpenTelemetry metrics and spans, read back from the SDK's in-memory reader and exporter.

A real aiohttp.web token endpoint and API on 127.0.0.1 (tests/endpoints.py):
a 503, then tokens; the API refuses the first token once (RFC 6750 401).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiopay_auth import RefreshPolicy, TokenManager
from aiopay_auth.otel import instrument, traced_source

from .endpoints import CLIENT_SECRET, WebEndpoint, make_provider, oauth_error, token_json


pytestmark = pytest.mark.anyio

LIFETIME = 60
TOKENS = ("otel-access-token-ONE-4f9c1b", "otel-access-token-TWO-8d2e7a")
POLICY = RefreshPolicy(backoff_initial=0.01, backoff_max=0.01, min_fetch_interval=0.01)


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _value(points: dict[str, list[Any]], name: str, **attributes: str) -> float:
    (point,) = [
        p for p in points[name] if all(p.attributes.get(k) == v for k, v in attributes.items())
    ]
    return float(point.value)


async def test_metrics_and_spans_follow_fetches_failures_and_a_401(endpoint: WebEndpoint) -> None:
    answers = [oauth_error(503, "temporarily_unavailable")]
    answers += [token_json(token, LIFETIME) for token in TOKENS]

    async def handler(_: web.Request) -> web.Response:
        if len(endpoint.calls) == 3:
            endpoint.api_status = 200  # the second token is accepted
        return answers[len(endpoint.calls) - 1]

    endpoint.handler = handler
    endpoint.api_status = 401  # the first token is refused (a revocation)
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    async with TokenManager(policy=POLICY, token_source=traced_source(tracer_provider)) as tokens:
        holder = tokens.add(make_provider(endpoint.base))
        async with tokens.session(holder, limit=2) as http:
            instrument(
                tokens, sessions=[http], meter_provider=MeterProvider(metric_readers=[reader])
            )
            async with http.get(f"{endpoint.base}/api/pay") as resp:
                assert resp.status == 200
            points = _points(reader)

    provider = {"aiopay_auth.provider": "hostile"}
    assert _value(points, "aiopay_auth.token.fetches", **provider) == len(endpoint.calls) == 3
    assert (
        _value(points, "aiopay_auth.token.failures", **provider, **{"error.type": "server_error"})
        == 1
    )
    assert len(points["aiopay_auth.token.failures"]) == 1
    assert 0 < _value(points, "aiopay_auth.token.expires_in", **provider) <= LIFETIME
    assert _value(points, "aiopay_auth.token.refresh_lag", **provider) == 0
    assert _value(points, "aiopay_auth.auth.recoveries", **provider) == 1
    assert _value(points, "aiopay_auth.token.waits", **provider) >= 1
    assert _value(points, "aiopay_auth.token.max_wait", **provider) > 0
    assert _value(points, "aiopay_auth.pool.queue") == 0

    spans = exporter.get_finished_spans()
    assert [span.attributes["aiopay_auth.outcome"] for span in spans if span.attributes] == [
        "failure",
        "success",
        "success",
    ]
    failed = spans[0].attributes
    assert failed is not None
    assert failed["error.type"] == "server_error"
    assert failed["http.response.status_code"] == 503
    for span in spans:
        assert span.name == "POST"
        assert span.attributes is not None
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["aiopay_auth.grant"] == "client_credentials"

    exported = [str(dict(span.attributes or {})) + str(span.status) for span in spans]
    exported += [str(dict(p.attributes)) for series in points.values() for p in series]
    for secret in (*TOKENS, CLIENT_SECRET):
        assert not any(secret in text for text in exported)
