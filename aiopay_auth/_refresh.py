"""The refresher: one task per provider that keeps its holder's token fresh."""

from __future__ import annotations

import random

import anyio

from ._policy import RefreshPolicy
from ._source import TokenSource
from ._step import FetchStep
from ._writer import HolderWriter


__all__ = ["Refresher"]


class Refresher:
    """Fetches, publishes, sleeps until the refresh point or an invalidation; forever.

    It is the holder's only writer, so at most one fetch per provider is
    ever in flight. It prefers the refresh-token grant while it holds a
    refresh token, falls back once to the primary grant when the refresh
    is refused, and keeps the newest refresh token when the provider
    rotates them. No exception but cancellation ends it. Each fetch and
    its rules are a :class:`~aiopay_auth._step.FetchStep`; this is the
    loop around it for one provider.

    Args:
        writer: The writer's half of the holder where tokens are published.
        source: Where tokens come from.
        policy: Timing rules.
        rng: Source of jitter (inject a seeded one for exact tests).
    """

    def __init__(
        self,
        writer: HolderWriter,
        source: TokenSource,
        policy: RefreshPolicy,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._writer = writer
        self._step = FetchStep(
            writer,
            source,
            policy,
            rng or random.Random(),  # noqa: S311 - jitter, not cryptography
        )

    async def run(self) -> None:
        """Run until cancelled."""
        writer, step = self._writer, self._step
        while True:
            outcome = await step()
            if outcome.published:
                await writer.wait_refresh_needed(outcome.delay)
            else:
                # A retry is pending: ``fetching`` stays set through the
                # backoff, as it always has for a provider's refresher.
                writer.fetching = True
                try:
                    await anyio.sleep(outcome.delay)
                finally:
                    writer.fetching = False
