"""Test your payment workers against real loopback servers.

:class:`FakeProvider` is a real ``aiohttp.web`` server on 127.0.0.1 that
speaks one provider's dialect strictly (it refuses what the real provider
would), issues short-lived tokens, guards a protected API with them, counts
every call and plays scripted or random faults. :func:`provider_for` builds
the matching provider profile aimed at it, and :func:`blackhole` gives an
address whose connections never complete.

:class:`FakeProviderProcess` runs fake providers in a child process, so
that they do not share the client's core: the child sends back each one's
:class:`FakeEndpoint` (which :func:`provider_for` takes) and, on request,
its :class:`ServerCounters` (:class:`ClientCounters` per merchant's
client). :class:`RedisServer` starts a throwaway
``redis-server`` on a free loopback port.

With pytest, the ``fake_provider`` fixture (registered automatically as a
pytest plugin) starts servers and closes them after the test::

    async def test_my_worker(fake_provider):
        fake = await fake_provider("cm", lifetime=2)
        async with TokenManager() as tokens:
            holder = tokens.add(provider_for(fake))
            ...
"""

from ._blackhole import blackhole
from ._profiles import provider_for
from ._redis import RedisServer
from ._remote import ClientCounters, FakeEndpoint, FakeProviderProcess, ServerCounters
from ._server import Dialect, FakeProvider, Scripted


__all__ = [
    "ClientCounters",
    "Dialect",
    "FakeEndpoint",
    "FakeProvider",
    "FakeProviderProcess",
    "RedisServer",
    "Scripted",
    "ServerCounters",
    "blackhole",
    "provider_for",
]
