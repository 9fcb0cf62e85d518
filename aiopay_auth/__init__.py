"""aiopay_auth: OAuth2 bearer tokens kept fresh for asyncio payment workers.

One background refresher per provider fetches tokens before they expire and
publishes them through a lock-free holder; an aiohttp client middleware
stamps them on every request to that provider's API.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._assertion import ClientAssertion
from ._health import FailureKind, Health, HealthState
from ._holder import TokenHolder
from ._limit import FetchLimit
from ._log import use_structlog
from ._manager import TokenManager
from ._middleware import BearerAuth, ClientTenantRemovedError, ClientTokenUnavailableError
from ._network import Network
from ._oauth import TokenRequest, build_token_request, parse_token_response
from ._policy import RefreshPolicy
from ._pool import FairPool
from ._provider import Provider
from ._secret import Secret
from ._source import TokenSource
from ._tenants import Tenant, Tenants
from ._token import Token
from .exceptions import (
    AuthError,
    ConfigError,
    TenantRemovedError,
    TenantRequiredError,
    TokenEndpointError,
    TokenRequestError,
    TokenResponseError,
    TokenTLSError,
    TokenUnavailableError,
)


__all__ = [
    "AuthError",
    "BearerAuth",
    "ClientAssertion",
    "ClientTenantRemovedError",
    "ClientTokenUnavailableError",
    "ConfigError",
    "FailureKind",
    "FairPool",
    "FetchLimit",
    "Health",
    "HealthState",
    "Network",
    "Provider",
    "RefreshPolicy",
    "Secret",
    "Tenant",
    "TenantRemovedError",
    "TenantRequiredError",
    "Tenants",
    "Token",
    "TokenEndpointError",
    "TokenHolder",
    "TokenManager",
    "TokenRequest",
    "TokenRequestError",
    "TokenResponseError",
    "TokenSource",
    "TokenTLSError",
    "TokenUnavailableError",
    "build_token_request",
    "parse_token_response",
    "use_structlog",
]


# Names taken out of __all__ in 0.2, importable until 0.3 with a warning.
_DEPRECATED = {
    "FairGate": ("._pool", "FairGate", "use FairPool (aiohttp) or aiopay_auth.httpx's client()"),
    "ProviderStats": ("._holder", "ProviderStats", "use TokenHolder.health()"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        from importlib import import_module  # noqa: PLC0415 - only when asked

        module, attribute, instead = _DEPRECATED[name]
        warnings.warn(
            f"aiopay_auth.{name} is deprecated and goes in 0.3: {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        value = getattr(import_module(module, __name__), attribute)
        # Kept, so that one use warns once: ``from aiopay_auth import X`` looks twice.
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked

        return version("aiopay-auth")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
