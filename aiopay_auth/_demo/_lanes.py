"""What the demo's workers send: one lane per provider, planned from the fake servers' endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
from yarl import URL

from .._provider import Provider
from ..providers.oro import API_ACCEPT
from ..testing import Dialect, FakeEndpoint, provider_for


__all__ = ["DIALECTS", "Lane", "payment_body", "plan_lanes"]

DIALECTS: tuple[Dialect, ...] = ("cm", "vonage", "payme", "oro")
"""The fake servers the demo starts, one per dialect."""

_JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))
_JSONAPI_HEADERS = (("Content-Type", API_ACCEPT), ("Accept", API_ACCEPT))


@attrs.frozen(kw_only=True)
class Lane:
    """One provider the workers send to: its profile and a request to send.

    Plain, picklable data, so that the fleet's worker processes get it.

    Attributes:
        provider: The provider profile, aimed at its fake server.
        server: The fake server's name.
        url: Where the workers POST payments.
        headers: Headers of every request.
        jsonapi_type: The JSON:API resource type for Oro; ``None`` for a
            plain JSON payment.
    """

    provider: Provider
    server: str
    url: URL
    headers: tuple[tuple[str, str], ...]
    jsonapi_type: str | None = None


def _payment_url(endpoint: FakeEndpoint) -> URL:
    if endpoint.dialect == "cm":
        return endpoint.api_base.joinpath("paymentmethods", "checkout", "v1", "transactions")
    if endpoint.dialect == "payme":
        return endpoint.api_base / "charges"
    return endpoint.api_base / "payments"


def plan_lanes(endpoints: Iterable[FakeEndpoint]) -> tuple[Lane, ...]:
    """The providers and requests of the demo, for started fake servers.

    Args:
        endpoints: One started fake per dialect of :data:`DIALECTS`.

    Returns:
        One lane per provider: Oro gets a back-office and a storefront one.
    """
    lanes: list[Lane] = []
    for endpoint in endpoints:
        server = endpoint.name
        if endpoint.dialect != "oro":
            provider = provider_for(endpoint, name=server)
            lanes.append(
                Lane(
                    provider=provider,
                    server=server,
                    url=_payment_url(endpoint),
                    headers=_JSON_HEADERS,
                )
            )
            continue
        storefront = endpoint.storefront_api_base
        if storefront is None:  # pragma: no cover - every Oro endpoint has one
            msg = f"{server}: no storefront API"
            raise RuntimeError(msg)
        lanes.append(
            Lane(
                provider=provider_for(endpoint, name="oro-backoffice"),
                server=server,
                url=endpoint.api_base / "orders",
                headers=_JSONAPI_HEADERS,
                jsonapi_type="orders",
            )
        )
        lanes.append(
            Lane(
                provider=provider_for(endpoint, application="storefront", name="oro-storefront"),
                server=server,
                url=storefront / "checkouts",
                headers=_JSONAPI_HEADERS,
                jsonapi_type="checkouts",
            )
        )
    return tuple(lanes)


def payment_body(lane: Lane, reference: str) -> bytes:
    """A small payment document for *lane*'s API.

    Args:
        lane: Where it is sent.
        reference: The merchant's reference, unique per request.

    Returns:
        The JSON body (JSON:API for Oro).
    """
    if lane.jsonapi_type is not None:
        document: dict[str, Any] = {
            "data": {
                "type": lane.jsonapi_type,
                "attributes": {"identifier": reference, "currency": "EUR", "total": "12.50"},
            }
        }
    else:
        document = {
            "reference": reference,
            "amount": {"currency": "EUR", "value": 1250},
            "description": "aiopay-auth demo payment",
        }
    return json.dumps(document, separators=(",", ":")).encode()
