"""Plain RFC 6749: every grant the SDK speaks; the password grant brings a refresh token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._provider import Provider
from ...providers import generic
from ._base import Endpoint, aimed_at
from ._form import FormRules


__all__ = ["Rfc6749Rules"]


class Rfc6749Rules(FormRules):
    """A standard OAuth 2.0 server; clients authenticate in the body or as HTTP Basic."""

    token_path = "/oauth/token"
    api_path = "/api"

    def refresh_by_default(self, grant_type: str) -> bool:
        """A password grant comes with a refresh token."""
        return grant_type == "password"

    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """A :func:`~aiopay_auth.providers.generic.provider` named ``rfc6749`` aimed at *fake*."""
        return generic.provider(**{"name": "rfc6749", **aimed_at(fake), **options})
