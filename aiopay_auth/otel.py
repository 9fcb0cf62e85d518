"""OpenTelemetry metrics and spans, an optional extra (``aiopay-auth[otel]``).

Metrics are *observable* instruments: their callbacks read each holder's
:meth:`~aiopay_auth.TokenHolder.health` (no I/O, no await) when a reader
collects, so the request hot path runs no telemetry code at all. Spans wrap
the token source (``TokenManager(token_source=traced_source())``): one span
per token request, off the hot path. Neither ever carries a token, secret or
assertion: only the provider's name, the grant, the endpoint's host and
port, the outcome, the HTTP status and the failure kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import aiohttp
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider

from ._health import failure_kind
from ._pool import gates_for
from .exceptions import AuthError, TokenResponseError


if TYPE_CHECKING:
    from ._fetch import TokenSource
    from ._holder import TokenHolder
    from ._manager import TokenManager
    from ._secret import Secret
    from ._token import Token


__all__ = ["OtelTokenSource", "instrument", "traced_source"]

_SCOPE = "aiopay_auth"


def _provider(holder: TokenHolder) -> dict[str, str]:
    return {"aiopay_auth.provider": holder.name}


def instrument(
    tokens: TokenManager,
    *,
    sessions: Sequence[aiohttp.ClientSession] = (),
    meter_provider: MeterProvider | None = None,
) -> Meter:
    """Register observable metrics over every provider of *tokens*.

    Each callback reads the holders' health when a reader collects; a
    provider added later is observed from then on. Nothing runs per request.

    Args:
        tokens: The manager whose providers to observe.
        sessions: Sessions from :meth:`TokenManager.session
            <aiopay_auth.TokenManager.session>` whose FIFO admission queue
            length to observe (``aiopay_auth.pool.queue``).
        meter_provider: Where to register; the global one by default (a
            no-op until the application configures one).

    Returns:
        The meter the instruments live on.
    """
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE)

    def each(
        read: Callable[[TokenHolder], Iterable[tuple[float, dict[str, str]]]],
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, attributes)
                for holder in tokens.holders()
                for value, attributes in read(holder)
            ]

        return callback

    def fetches(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [(holder.stats.fetches, _provider(holder))]

    def failures(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [
            (count, {**_provider(holder), "error.type": kind})
            for kind, count in holder.stats.failures_by_kind.items()
        ]

    def expires_in(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        token = holder.current
        return [] if token is None else [(token.expires_at - holder.clock(), _provider(holder))]

    def refresh_lag(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        # Seconds the served token is past its (unjittered) refresh point.
        token = holder.current
        if token is None:
            return []
        due = token.expires_at - tokens.policy.margin(token.expires_at - token.issued_at)
        return [(max(0.0, holder.clock() - due), _provider(holder))]

    def waits(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [(holder.stats.waits, _provider(holder))]

    def max_wait(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [(holder.stats.max_wait, _provider(holder))]

    def recoveries(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [(holder.stats.recoveries, _provider(holder))]

    def queue(_: CallbackOptions) -> Iterable[Observation]:
        observed = []
        for index, session in enumerate(sessions):
            gates = None if session.closed else gates_for(session.connector)  # type: ignore[arg-type]
            waiting = 0 if gates is None else gates.waiting
            observed.append(Observation(waiting, {"aiopay_auth.session": str(index)}))
        return observed

    meter.create_observable_counter(
        "aiopay_auth.token.fetches",
        [each(fetches)],
        unit="{request}",
        description="Token requests sent.",
    )
    meter.create_observable_counter(
        "aiopay_auth.token.failures",
        [each(failures)],
        unit="{request}",
        description="Token requests that failed, by error.type (the FailureKind).",
    )
    meter.create_observable_gauge(
        "aiopay_auth.token.expires_in",
        [each(expires_in)],
        unit="s",
        description="Seconds until the served token expires (negative once expired).",
    )
    meter.create_observable_gauge(
        "aiopay_auth.token.refresh_lag",
        [each(refresh_lag)],
        unit="s",
        description="Seconds the served token is past its refresh point (0 when on time).",
    )
    meter.create_observable_counter(
        "aiopay_auth.token.waits",
        [each(waits)],
        unit="{request}",
        description="Requests that waited for a token.",
    )
    meter.create_observable_gauge(
        "aiopay_auth.token.max_wait",
        [each(max_wait)],
        unit="s",
        description="The longest wait for a token so far.",
    )
    meter.create_observable_counter(
        "aiopay_auth.auth.recoveries",
        [each(recoveries)],
        unit="{request}",
        description="Requests resent with a fresh token after a 401.",
    )
    if sessions:
        meter.create_observable_gauge(
            "aiopay_auth.pool.queue",
            [queue],
            unit="{request}",
            description="Requests queued at the FIFO admission gate.",
        )
    return meter


class OtelTokenSource:
    """A token source that records one CLIENT span per token request.

    Attributes follow the HTTP client semantic conventions
    (``http.request.method``, ``server.address``, ``server.port``,
    ``http.response.status_code`` when the failure carried one,
    ``error.type`` as the :data:`~aiopay_auth.FailureKind`) plus
    ``aiopay_auth.provider``, ``aiopay_auth.grant`` and
    ``aiopay_auth.outcome`` (``success`` or ``failure``).

    Args:
        holder: The provider's holder.
        inner: The source to wrap.
        tracer_provider: Where spans go; the global one by default.
    """

    def __init__(
        self,
        holder: TokenHolder,
        inner: TokenSource,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._inner = inner
        self._provider = holder.provider
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Fetch through the wrapped source inside a span."""
        provider = self._provider
        url = provider.token_url
        grant = "refresh_token" if refresh_token is not None else provider.grant_type
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "server.address": url.host or "",
            "aiopay_auth.provider": provider.name,
            "aiopay_auth.grant": grant,
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        with self._tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                token = await self._inner.fetch(refresh_token)
            except AuthError as exc:
                span.set_attribute("aiopay_auth.outcome", "failure")
                span.set_attribute("error.type", failure_kind(exc))
                if isinstance(exc, TokenResponseError) and exc.status:
                    span.set_attribute("http.response.status_code", exc.status)
                span.set_status(StatusCode.ERROR)
                raise
            except BaseException as exc:
                span.set_attribute("aiopay_auth.outcome", "failure")
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise
            span.set_attribute("aiopay_auth.outcome", "success")
            return token


def traced_source(
    tracer_provider: TracerProvider | None = None,
) -> Callable[[TokenHolder, TokenSource], TokenSource]:
    """A ``token_source=`` hook for :class:`~aiopay_auth.TokenManager` that traces each fetch."""

    def wrap(holder: TokenHolder, inner: TokenSource) -> TokenSource:
        return OtelTokenSource(holder, inner, tracer_provider=tracer_provider)

    return wrap
