"""What a fake dialect is: the hooks the shared server asks, and what it may ask back."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from aiohttp import web
from yarl import URL

from ..._provider import Provider
from ._wire import Rejection


__all__ = ["DialectRules", "Endpoint", "TokenDesk", "aimed_at"]


class TokenDesk(Protocol):
    """The server's side of a token request: what a dialect may ask while it answers one.

    Every client, refresh token and counter stays the server's; a dialect only reads the
    request, asks here in the order its provider checks, and shapes the answer.
    """

    @property
    def username(self) -> str:
        """The accepted resource-owner username."""
        ...

    @property
    def audience(self) -> str:
        """The ``audience`` a Pay-me token request must name."""
        ...

    def check_client(self, client_id: str, client_secret: str, *, basic: bool) -> str:
        """Authenticate the client (counted by its id); return the kind of token it gets.

        Raises:
            Rejection: 401 ``invalid_client`` (with a Basic challenge if *basic*).
        """
        ...

    def check_user(self, username: str, password: str, status: int = 400) -> None:
        """Refuse a wrong resource-owner login with *status*.

        Raises:
            Rejection: ``invalid_grant``.
        """
        ...

    def spend_refresh(self, refresh_token: str, client_id: str) -> tuple[str, bool]:
        """Validate a refresh token; return its kind and whether to issue a new one.

        Raises:
            Rejection: 400 ``invalid_grant`` (an OAuth error even for Pay-me).
        """
        ...

    def wants_refresh(self, default: bool) -> bool:
        """Whether to issue a refresh token: the test's choice, else the dialect's *default*."""
        ...

    def issue(self, kind: str, client_id: str, *, with_refresh: bool) -> dict[str, Any]:
        """Issue an access token (and a refresh token); return the RFC 6749 answer fields."""
        ...


class Endpoint(Protocol):
    """Where a fake listens and what it accepts: a ``FakeProvider`` or a ``FakeEndpoint``."""

    @property
    def base_url(self) -> URL:
        """The server's root URL."""
        ...

    @property
    def token_url(self) -> URL:
        """Its token endpoint."""
        ...

    @property
    def api_base(self) -> URL:
        """Base URL of its protected API."""
        ...

    @property
    def client_id(self) -> str:
        """The accepted client id."""
        ...

    @property
    def client_secret(self) -> str:
        """The accepted client secret."""
        ...

    @property
    def username(self) -> str:
        """The accepted resource-owner username."""
        ...

    @property
    def password(self) -> str:
        """The accepted resource-owner password."""
        ...

    @property
    def storefront_client_id(self) -> str:
        """The Oro storefront client id."""
        ...

    @property
    def audience(self) -> str:
        """The Pay-me ``audience``."""
        ...


def aimed_at(fake: Endpoint) -> dict[str, Any]:
    """A profile's token URL, API and client credentials, taken from *fake*."""
    return {
        "token_url": fake.token_url,
        "api": fake.api_base,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }


class DialectRules(abc.ABC):
    """One provider as its fake speaks it: paths, token requests, answers and errors.

    Subclasses are stateless; the registry (:data:`~._dialects.DIALECTS`) holds one instance
    per dialect and the shared server asks it instead of comparing dialect names.

    Attributes:
        token_path: Path of the token endpoint.
        api_path: Path of the protected API (Oro: the back office's).
        storefront_path: Path of a second API, for the storefront client's tokens (Oro
            only), or ``None``.
        token_type: The ``token_type`` the provider answers with.
    """

    token_path: ClassVar[str]
    api_path: ClassVar[str]
    storefront_path: ClassVar[str | None] = None
    token_type: ClassVar[str] = "Bearer"

    @abc.abstractmethod
    async def answer(self, request: web.Request, desk: TokenDesk) -> web.Response:
        """Answer a POST to the token endpoint, validating it as the provider does.

        Raises:
            Rejection: For every request the provider refuses.
        """

    def error_body(self, rejection: Rejection) -> object:
        """The body of the error answer to a refused token request (RFC 6749 §5.2)."""
        return {"error": rejection.error, "error_description": rejection.description}

    @abc.abstractmethod
    def profile(self, fake: Endpoint, options: Mapping[str, Any]) -> Provider:
        """The real provider profile aimed at *fake*, *options* overriding its defaults."""
