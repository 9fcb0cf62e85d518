"""Vonage Contact Center: form body or HTTP Basic, scope ``globalpci``, ``bearer`` in lower case."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._provider import Provider
from ...providers import vonage
from ._base import Endpoint, aimed_at
from ._form import FormRules
from ._wire import Rejection


__all__ = ["VonageRules"]


class VonageRules(FormRules):
    """Vonage VCC: every token request's scope must include ``globalpci`` (the Payment API)."""

    token_path = "/auth/connect/token"
    api_path = "/payment-api"
    token_type = "bearer"

    def check_scope(self, scope: frozenset[str]) -> None:
        """Refuse a scope without ``globalpci``."""
        if "globalpci" not in scope:
            raise Rejection(400, "invalid_scope", "scope must include globalpci")

    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """A :func:`~aiopay_auth.providers.vonage.provider` (region ``emea``) aimed at *fake*."""
        return vonage.provider(**{"region": "emea", **aimed_at(fake), **options})
