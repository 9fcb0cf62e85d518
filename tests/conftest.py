"""Shared fixtures: the asyncio backend for anyio's pytest plugin."""

from __future__ import annotations

import pytest


@pytest.fixture(name="anyio_backend", scope="session")
def _anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"
