"""CM.com Online Payments: client credentials only, in a form body, JSON answers only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import hdrs, web

from ..._provider import Provider
from ...providers import cm
from ._base import Endpoint, aimed_at
from ._form import FormRules
from ._wire import Rejection, accepts_json, forbid_authorization_header


__all__ = ["CmRules"]


class CmRules(FormRules):
    """CM.com: ``client_credentials`` with the secret in the body; ``Accept`` must admit JSON."""

    token_path = "/api/v1/authorization/oauth2/token"
    api_path = "/api/v1"
    grants: ClassVar[frozenset[str]] = frozenset({"client_credentials"})

    def check_headers(self, request: web.Request) -> None:
        """Refuse an ``Accept`` without JSON (406) and any ``Authorization`` header."""
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, ()))
        if accept and not accepts_json(accept):
            raise Rejection(406, "invalid_request", "Accept header excludes application/json")
        forbid_authorization_header(request)

    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """A :func:`~aiopay_auth.providers.cm.provider` aimed at *fake*."""
        return cm.provider(**{**aimed_at(fake), **options})
