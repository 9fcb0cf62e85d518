"""OpenTelemetry metrics and spans, an optional extra (``aiopay-auth[otel]``).

Metrics are *observable* instruments: their callbacks read each holder's
counters and current token (no I/O, no await) when a reader
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


try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import SpanKind, StatusCode, TracerProvider
except ImportError as exc:  # the extra is not installed
    msg = f"aiopay_auth.otel needs OpenTelemetry: pip install 'aiopay-auth[otel]' ({exc})"
    raise ImportError(msg) from exc

from ._health import failure_kind
from ._pool import PoolGates, gates_for
from ._source import store_of
from .exceptions import AuthError, ConfigError, TokenResponseError


if TYPE_CHECKING:
    from ._holder import TokenHolder
    from ._manager import TokenManager
    from ._secret import Secret
    from ._source import TokenSource
    from ._token import Token


__all__ = ["OtelTokenSource", "instrument", "traced_source"]

_SCOPE = "aiopay_auth"

_Read = Callable[["TokenHolder"], Iterable[tuple[float, dict[str, str]]]]
"""What one instrument reads off one holder: (value, attributes) pairs."""


def _provider(holder: TokenHolder) -> dict[str, str]:
    return {"aiopay_auth.provider": holder.name}


def instrument(
    tokens: TokenManager,
    *,
    sessions: Sequence[aiohttp.ClientSession] = (),
    meter_provider: MeterProvider | None = None,
) -> Meter:
    """Register observable metrics over every provider of *tokens*.

    Each callback reads the holders' counters when a reader collects; a
    provider added later is observed from then on. Nothing runs per request.

    Args:
        tokens: The manager whose providers to observe.
        sessions: Sessions from :meth:`TokenManager.session
            <aiopay_auth.TokenManager.session>` whose FIFO admission gate
            to observe: its queue's length (``aiopay_auth.pool.queue``),
            and, counted from this call on, the requests that queued and
            their seconds there (``aiopay_auth.pool.admission.*``).
        meter_provider: Where to register; the global one by default (a
            no-op until the application configures one).

    Returns:
        The meter the instruments live on.
    """
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE)

    def each(read: _Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, attributes)
                for holder in tokens.holders()
                for value, attributes in read(holder)
            ]

        return callback

    def stat(field: str) -> _Read:
        def read(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
            return [(getattr(holder.health(), field), _provider(holder))]

        return read

    def failures(holder: TokenHolder) -> Iterable[tuple[float, dict[str, str]]]:
        return [
            (count, {**_provider(holder), "error.type": kind})
            for kind, count in holder.health().failures_by_kind.items()
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

    def per_session(read: Callable[[PoolGates], float]) -> Callable[..., Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            observed = []
            for index, session in enumerate(sessions):
                connector = session.connector
                gates = None if connector is None else gates_for(connector)
                value = 0.0 if gates is None else read(gates)
                observed.append(Observation(value, {"aiopay_auth.session": str(index)}))
            return observed

        return callback

    counter, gauge = meter.create_observable_counter, meter.create_observable_gauge
    per_provider: tuple[tuple[Callable[..., object], str, _Read, str, str], ...] = (
        (counter, "token.fetches", stat("fetches"), "{request}", "Token requests sent."),
        (
            counter,
            "token.failures",
            failures,
            "{request}",
            "Token requests that failed, by error.type (the FailureKind).",
        ),
        (
            gauge,
            "token.expires_in",
            expires_in,
            "s",
            "Seconds until the served token expires (negative once expired).",
        ),
        (
            gauge,
            "token.refresh_lag",
            refresh_lag,
            "s",
            "Seconds the served token is past its refresh point (0 when on time).",
        ),
        (counter, "token.waits", stat("waits"), "{request}", "Requests that waited for a token."),
        (gauge, "token.max_wait", stat("max_wait"), "s", "The longest wait for a token so far."),
        (
            counter,
            "token.wait_time",
            stat("wait_time"),
            "s",
            "Seconds requests spent waiting for a token, in total.",
        ),
        (
            counter,
            "auth.recoveries",
            stat("recoveries"),
            "{request}",
            "Requests resent with a fresh token after a 401.",
        ),
    )
    for create, name, read, unit, description in per_provider:
        create(f"{_SCOPE}.{name}", [each(read)], unit=unit, description=description)
    per_pool: tuple[tuple[Callable[..., object], str, Callable[[PoolGates], float], str, str], ...]
    per_pool = (
        (
            gauge,
            "pool.queue",
            lambda gates: gates.waiting,
            "{request}",
            "Requests queued at the FIFO admission gate.",
        ),
        (
            counter,
            "pool.admission.waits",
            lambda gates: gates.queued,
            "{request}",
            "Requests that had to queue at the admission gate.",
        ),
        (
            counter,
            "pool.admission.wait_time",
            lambda gates: gates.queue_time,
            "s",
            "Seconds requests spent queued at the admission gate, in total.",
        ),
    )
    for session in sessions:
        gates = None if session.connector is None else gates_for(session.connector)
        if gates is not None:
            gates.time_queues()  # the waiting path counts only once asked to
    for create, name, read_gates, unit, description in per_pool if sessions else ():
        create(f"{_SCOPE}.{name}", [per_session(read_gates)], unit=unit, description=description)
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
        self._holder = holder
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)

    @property
    def store(self) -> str | None:
        """The wrapped source's shared-store state, if it has one (``health().store``)."""
        return store_of(self._inner)

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Fetch through the wrapped source inside a span."""
        provider = self._holder.provider  # a tenant's changes when it is rotated
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
            except (AuthError, ConfigError) as exc:
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
