"""Provider profiles pointed at a :class:`FakeProvider`."""

from __future__ import annotations

from typing import Any

from .._provider import Provider
from ..providers import cm, generic, oro, payme, vonage
from ._remote import FakeEndpoint
from ._server import FakeProvider


__all__ = ["provider_for"]


def provider_for(fake: FakeProvider | FakeEndpoint, **options: Any) -> Provider:
    """The real provider profile for *fake*'s dialect, aimed at the fake server.

    It is built by the same ``provider()`` function users call
    (:mod:`aiopay_auth.providers`), with the fake's URLs and credentials,
    so a test exercises the real dialect end to end.

    Args:
        fake: A started fake provider, or the :class:`FakeEndpoint` of one
            (from a :class:`~aiopay_auth.testing.FakeProviderProcess`).
        options: Passed on to the dialect's ``provider()`` and override the
            defaults: e.g. ``client_auth="basic"`` for Vonage,
            ``application="storefront"`` for Oro, ``name=...``.

    Returns:
        The profile.
    """
    creds: dict[str, Any] = {"client_id": fake.client_id, "client_secret": fake.client_secret}
    dialect = fake.dialect
    if dialect == "cm":
        kwargs = {"token_url": fake.token_url, "api": fake.api_base, **creds}
        return cm.provider(**{**kwargs, **options})
    if dialect == "vonage":
        kwargs = {"region": "emea", "token_url": fake.token_url, "api": fake.api_base, **creds}
        return vonage.provider(**{**kwargs, **options})
    if dialect == "payme":
        kwargs = {
            "environment": "development",
            "token_url": fake.token_url,
            "api": fake.api_base,
            "audience": fake.audience,
            "username": fake.username,
            "password": fake.password,
            **creds,
        }
        return payme.provider(**{**kwargs, **options})
    if dialect == "oro":
        if options.get("application") == "storefront":
            creds["client_id"] = fake.storefront_client_id
        kwargs = {"app_url": fake.base_url, **creds}
        return oro.provider(**{**kwargs, **options})
    kwargs = {"name": "rfc6749", "token_url": fake.token_url, "api": fake.api_base, **creds}
    return generic.provider(**{**kwargs, **options})
