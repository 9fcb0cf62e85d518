"""OpenTelemetry on the hot path: a request with telemetry absent, off and on, paired.

Three managers side by side in one process, each with one provider and a
``tokens.session()``:

* **absent**: no :mod:`aiopay_auth.otel` for this manager (the core
  never imports OpenTelemetry: ``tests/test_otel.py`` runs it with the
  package blocked);
* **off**: ``instrument()`` and ``traced_source()`` on the OpenTelemetry
  API's default providers, as when the extra is installed and the
  application configured no SDK (no-op meter and tracer);
* **on**: ``instrument()`` on an SDK ``MeterProvider`` with an in-memory
  reader (collected once before timing, so every callback has run) and
  ``traced_source()`` on an SDK ``TracerProvider`` with a span processor.

Each case drives its session's middleware chain with a trivial handler, as
:mod:`benchmarks.micro` does (no I/O). Batches run in rotating order; a
figure is the median over rotations of each batch's ratio to *absent*'s
batch of the same rotation, with the interquartile range. Off the hot
path, it also times one traced token request against an untraced one (the
span's cost per token fetch) and one metrics collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import timeit
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientRequest
from aiohttp.client_middlewares import build_client_middlewares
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yarl import URL

from aiopay_auth import TokenManager
from aiopay_auth.otel import OtelTokenSource, instrument, traced_source
from aiopay_auth.providers import generic

from .micro import _BASE, _handler, _static_source, _StaticSource, complete
from .rotations import iqr_text, paired_ratios, quartiles, rotation_order


CASES = ("absent", "off", "on")


@dataclass(frozen=True)
class TelemetryConfig:
    """Loops per timed batch, rotations, and the token-fetch comparison's size."""

    loops: int
    rotations: int
    fetch_loops: int


FULL_TELEMETRY = TelemetryConfig(loops=10_000, rotations=102, fetch_loops=5_000)
QUICK_TELEMETRY = TelemetryConfig(loops=10_000, rotations=6, fetch_loops=1_000)


def _provider() -> Any:
    return generic.provider(
        name="micro",
        token_url=_BASE + "/oauth/token",
        api=_BASE + "/api",
        client_id="micro",
        client_secret="micro",
    )


async def run_telemetry(cfg: TelemetryConfig) -> dict[str, Any]:
    """Time the three cases; needs a running event loop. Times in ns per call."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    def on_source(holder: Any, inner: Any) -> Any:
        return traced_source(tracer_provider)(holder, _static_source(holder, inner))

    def off_source(holder: Any, inner: Any) -> Any:
        return traced_source()(holder, _static_source(holder, inner))

    loop = asyncio.get_running_loop()
    chains: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for case, source in (("absent", _static_source), ("off", off_source), ("on", on_source)):
            tokens = await stack.enter_async_context(TokenManager(token_source=source))
            holder = tokens.add(_provider())
            await holder.get()
            session = tokens.session(holder, limit=100)
            stack.push_async_callback(session.close)
            if case != "absent":
                instrument(
                    tokens,
                    sessions=[session],
                    meter_provider=meter_provider if case == "on" else None,
                )
            # Each case's request belongs to its own session (FairPool reads its gates).
            request = ClientRequest("GET", URL(_BASE + "/api/payments"), session=session, loop=loop)
            chains[case] = (tuple(session._middlewares), holder, request)
        reader.get_metrics_data()  # every callback has run once

        timers = {
            case: timeit.Timer(
                "complete(build(handler, chain)(request))",
                globals={
                    "complete": complete,
                    "build": build_client_middlewares,
                    "handler": _handler,
                    "chain": chain,
                    "request": request,
                },
            )
            for case, (chain, _, request) in chains.items()
        }
        for timer in timers.values():
            timer.timeit(min(cfg.loops, 10_000))  # warm up
        per_call: dict[str, list[float]] = {case: [] for case in CASES}
        for rotation in range(cfg.rotations):
            for case in rotation_order(CASES, rotation):
                per_call[case].append(timers[case].timeit(cfg.loops) / cfg.loops * 1e9)

        # Which functions a request runs with telemetry on: none of OpenTelemetry's.
        otel_calls = _otel_calls(timers["on"], requests=1_000)

        # Off the hot path: one token request through the span, and a collection.
        holder_on = chains["on"][1]
        fetches = {
            "untraced": _StaticSource(),
            "traced, no SDK (off)": OtelTokenSource(
                holder_on, _StaticSource(), tracer_provider=None
            ),
            "traced, SDK (on)": OtelTokenSource(
                holder_on, _StaticSource(), tracer_provider=tracer_provider
            ),
        }
        fetch_ns = {}
        for label, fetch_source in fetches.items():
            timer = timeit.Timer(
                "complete(source.fetch(None))",
                globals={"complete": complete, "source": fetch_source},
            )
            timer.timeit(min(cfg.fetch_loops, 1_000))
            runs = timer.repeat(repeat=5, number=cfg.fetch_loops)
            fetch_ns[label] = min(runs) / cfg.fetch_loops * 1e9
        exporter.clear()
        collect = timeit.Timer(reader.get_metrics_data).repeat(repeat=5, number=200)
        collect_us = min(collect) / 200 * 1e6

    return {
        "config": {"loops": cfg.loops, "rotations": cfg.rotations},
        "per_call_ns": {case: quartiles(values) for case, values in per_call.items()},
        "ratio_to_absent": {
            case: paired_ratios(per_call[case], per_call["absent"]) for case in ("off", "on")
        },
        "otel_calls_per_request": otel_calls[0] / 1_000,
        "aiopay_auth_calls_per_request": otel_calls[1] / 1_000,
        "token_fetch_ns": fetch_ns,
        "collect_us": collect_us,
    }


def _otel_calls(timer: timeit.Timer, *, requests: int) -> tuple[int, int]:
    """Python calls while *timer* runs *requests* requests: into OpenTelemetry or
    aiopay_auth.otel, and (the control that the hook sees calls) into aiopay_auth."""
    otel = ours = 0

    def profile(frame: Any, event: str, arg: object) -> None:
        nonlocal otel, ours
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith(("opentelemetry", "aiopay_auth.otel")):
                otel += 1
            elif module.startswith("aiopay_auth"):
                ours += 1

    sys.setprofile(profile)
    try:
        timer.timeit(requests)
    finally:
        sys.setprofile(None)
    return otel, ours


def build(results: dict[str, Any]) -> dict[str, Any]:
    """The section's document (the figures are final as measured)."""
    return dict(results)


def markdown(document: dict[str, Any]) -> list[str]:
    """The section as Markdown lines."""
    cfg = document["config"]
    lines = [
        "## OpenTelemetry on the hot path",
        "",
        f"tokens.session() middlewares with a trivial handler, {cfg['loops']:,} requests per "
        f"batch, {cfg['rotations']} rotations of absent / off / on; ratio to *absent* in the "
        "same rotation, median [IQR].",
        "",
        "| telemetry | ns per request, median [IQR] | ratio to absent |",
        "|---|---|---|",
    ]
    for case in CASES:
        ratio = (
            "1 (base)"
            if case == "absent"
            else iqr_text(document["ratio_to_absent"][case], ".3f") + " x"
        )
        lines.append(f"| {case} | {iqr_text(document['per_call_ns'][case], '.0f')} | {ratio} |")
    lines += [
        "",
        "Calls into OpenTelemetry or aiopay_auth.otel per request with telemetry on "
        f"(sys.setprofile): {document['otel_calls_per_request']:g} (control: "
        f"{document['aiopay_auth_calls_per_request']:g} calls into aiopay_auth's own code).",
        "",
        "Off the hot path:",
        "",
    ]
    for label, ns in document["token_fetch_ns"].items():
        lines.append(f"- one token request (static source), {label}: {ns / 1000:.1f} us")
    collect_us = document["collect_us"]
    lines.append(f"- one metrics collection (1 provider, 1 session): {collect_us:.0f} us")
    lines.append("")
    return lines
