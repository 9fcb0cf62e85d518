"""Provider profiles pointed at a :class:`FakeProvider`."""

from __future__ import annotations

from typing import Any

from .._provider import Provider
from ._dialects import DIALECTS
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
    return DIALECTS[fake.dialect].profile(fake, options)
