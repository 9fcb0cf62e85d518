"""OpenTelemetry metrics and spans, read back from the SDK's in-memory reader and exporter.

A real aiohttp.web token endpoint and API on 127.0.0.1 (tests/endpoints.py):
a 503, then tokens; the API refuses the first token once (RFC 6750 401).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiopay_auth import ClientAssertion, Provider, RefreshPolicy, TokenManager
from aiopay_auth.otel import instrument, traced_source

from .endpoints import CLIENT_SECRET, WebEndpoint, make_provider, oauth_error, token_json
from .helpers import run_python
from .loopback import serve


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
    max_wait = _value(points, "aiopay_auth.token.max_wait", **provider)
    assert 0 < max_wait <= _value(points, "aiopay_auth.token.wait_time", **provider)
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


async def test_spans_never_carry_an_assertion_or_the_key_even_when_the_endpoint_echoes_it() -> None:
    # private_key_jwt against a hostile endpoint that quotes the assertion it
    # was sent back in its error, then issues a token. Nothing of the
    # assertion, the key or the token may reach a span: attributes, status,
    # events.
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    sent: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        form = await request.post()
        sent.append(str(form["client_assertion"]))
        if len(sent) == 1:
            return oauth_error(503, "temporarily_unavailable", "bad assertion " + sent[0])
        return token_json(TOKENS[0], LIFETIME)

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with (
        serve(echo) as server,
        TokenManager(policy=POLICY, token_source=traced_source(tracer_provider)) as tokens,
    ):
        provider = Provider(
            name="signed",
            token_url=f"{server.url}/token",
            api=f"{server.url}/api",
            client_id="merchant-7",
            client_auth="private_key_jwt",
            assertion=ClientAssertion(key=key_pem, alg="ES256", kid="k-1"),
        )
        holder = tokens.add(provider)
        await holder.get(timeout=5)

    spans = exporter.get_finished_spans()
    assert ["failure", "success"] == [
        (s.attributes or {}).get("aiopay_auth.outcome") for s in spans
    ]
    assert 2 == len(sent)
    exported = ""
    for span in spans:
        exported += repr(dict(span.attributes or {})) + repr(span.status.description)
        exported += repr([(e.name, dict(e.attributes or {})) for e in span.events])
    secrets = [*sent, *(part for a in sent for part in a.split(".")), TOKENS[0]]
    secrets += key_pem.splitlines()[1:-1]
    assert [] == [s for s in secrets if s in exported]


def test_the_core_runs_without_the_otel_extra() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import asyncio, aiopay_auth\n"
        "from aiopay_auth import TokenManager\n"
        "async def main():\n"
        "    async with TokenManager() as tokens:\n"
        "        async with tokens.session():\n"
        "            pass\n"
        "asyncio.run(main())\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry') and sys.modules[m]]\n"
        "print('loaded:', loaded)\n"
        "try:\n"
        "    import aiopay_auth.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(script)
    assert "" == result.stderr
    assert "loaded: []" in result.stdout
    assert "pip install 'aiopay-auth[otel]'" in result.stdout


async def test_admission_waits_and_their_duration_at_a_saturated_pool() -> None:
    # A pool of one place and an API that takes 0.2 s: of three requests
    # sent together, two queue at the admission gate, for about 0.2 s and
    # 0.4 s.
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/token":
            return token_json(TOKENS[0], LIFETIME)
        await asyncio.sleep(0.2)
        return web.json_response({"paid": True})

    reader = InMemoryMetricReader()
    async with serve(answer) as server, TokenManager(policy=POLICY) as tokens:
        holder = tokens.add(make_provider(str(server.url)))
        await holder.get(timeout=5)
        async with tokens.session(holder, limit=1) as http:
            instrument(
                tokens, sessions=[http], meter_provider=MeterProvider(metric_readers=[reader])
            )
            idle = _points(reader)

            async def pay() -> int:
                async with http.get(server.url / "api" / "pay") as resp:
                    return resp.status

            assert [200, 200, 200] == list(await asyncio.gather(pay(), pay(), pay()))
            busy = _points(reader)
    session = {"aiopay_auth.session": "0"}
    assert 0 == _value(idle, "aiopay_auth.pool.admission.waits", **session)
    assert 0 == _value(idle, "aiopay_auth.pool.admission.wait_time", **session)
    assert 2 == _value(busy, "aiopay_auth.pool.admission.waits", **session)
    waited = _value(busy, "aiopay_auth.pool.admission.wait_time", **session)
    assert 0.5 <= waited < 3.0  # 0.2 s + 0.4 s, roomy for a loaded machine
    assert 0 == _value(busy, "aiopay_auth.pool.queue", **session)


async def test_a_request_runs_no_telemetry_code_with_telemetry_on() -> None:
    # The hot path's cost of telemetry is none: with both the metrics and the
    # spans on an SDK, requests with a fresh token call nothing of
    # OpenTelemetry's or aiopay_auth.otel's (python -m benchmarks --telemetry
    # times it).
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/token":
            return token_json(TOKENS[0], LIFETIME)
        return web.json_response({"paid": True})

    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: object) -> None:
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith(("opentelemetry", "aiopay_auth")):
            calls.append(module)

    async with (
        serve(answer) as server,
        TokenManager(policy=POLICY, token_source=traced_source(tracer_provider)) as tokens,
    ):
        holder = tokens.add(make_provider(str(server.url)))
        await holder.get(timeout=5)
        async with tokens.session(holder) as http:
            instrument(
                tokens, sessions=[http], meter_provider=MeterProvider(metric_readers=[reader])
            )
            reader.get_metrics_data()
            sys.setprofile(profile)
            try:
                for _ in range(20):
                    async with http.get(server.url / "api" / "pay") as resp:
                        assert 200 == resp.status
            finally:
                sys.setprofile(None)
    assert 1 == len(exporter.get_finished_spans())  # the one token request
    assert "aiopay_auth._pool" in calls  # the hook saw the SDK's request path
    assert [] == [m for m in calls if m.startswith(("opentelemetry", "aiopay_auth.otel"))]
