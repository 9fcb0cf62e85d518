"""The pytest plugin of :mod:`aiopay_auth.testing` (registered on install).

It provides one fixture, ``fake_provider``: an async factory that starts a
:class:`~aiopay_auth.testing.FakeProvider` and closes it after the test.
Use it from async tests run by anyio's pytest plugin on the asyncio backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ._server import Dialect, FakeProvider


__all__ = ["FakeProviderFactory", "fake_provider"]

FakeProviderFactory = Callable[..., Awaitable[FakeProvider]]
"""``await fake_provider(dialect, **options)`` returns a started server."""


@pytest.fixture(name="fake_provider")
async def fake_provider() -> AsyncIterator[FakeProviderFactory]:
    """Start fake providers on demand; every one is closed after the test."""
    started: list[FakeProvider] = []

    async def start(dialect: Dialect = "rfc6749", **options: Any) -> FakeProvider:
        fake = FakeProvider(dialect, **options)
        await fake.start()
        started.append(fake)
        return fake

    try:
        yield start
    finally:
        for fake in reversed(started):
            await fake.close()
