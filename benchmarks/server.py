"""The server side of the benchmark: fake OAuth2 providers in a child process.

The child process (:class:`~aiopay_auth.testing.FakeProviderProcess`) runs
:class:`~aiopay_auth.testing.FakeProvider` servers on 127.0.0.1, all in the
``rfc6749`` dialect: ``long`` issues day-long tokens and ``short``
one-second tokens; a section adds its own (:func:`fake`: any lifetime, a
slow token endpoint). Each serves its token endpoint (``/oauth/token``) and a
protected API (``/api``) that validates every bearer token it receives.
The child sends back where they listen; :meth:`ServerProcess.stats` asks
for a server's counters.

Running the servers in their own process, pinned to their own core when
the machine has two, means the client's event loop is measured alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from aiopay_auth.testing import (
    ClientCounters,
    FakeEndpoint,
    FakeProvider,
    FakeProviderProcess,
    ServerCounters,
)


LIFETIMES = {"long": 86_400.0, "short": 1.0}
"""Token lifetime of each server, in seconds."""

# A secret without characters that need form-encoding: some peers send
# HTTP Basic credentials without the RFC 6749 §2.3.1 encoding.
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"

Counters = ServerCounters
"""What one fake provider counted."""


def fake(
    lifetime: float,
    clients: Sequence[tuple[str, str]] = (),
    token_delay: float = 0.0,
    **credentials: Any,
) -> FakeProvider:
    """One benchmark fake (built in the child): ``rfc6749``, *clients* known too.

    *token_delay*: seconds it holds every token request before answering
    (:attr:`FakeProvider.token_delay <aiopay_auth.testing.FakeProvider.token_delay>`),
    a slow token endpoint that still answers normally. *credentials*: the
    main ``client_id`` and ``client_secret`` (the fake's own by default).
    """
    server = FakeProvider("rfc6749", lifetime=lifetime, clients=list(clients), **credentials)
    server.token_delay = token_delay
    return server


@dataclass(frozen=True)
class Endpoint:
    """Where one fake provider listens, and the credentials it accepts."""

    name: str
    lifetime: float
    token_url: str
    api_base: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    @classmethod
    def of(cls, fake: FakeEndpoint) -> Endpoint:
        """The benchmark's view of a fake provider started in the child."""
        return cls(
            name=fake.name,
            lifetime=fake.lifetime,
            token_url=str(fake.token_url),
            api_base=str(fake.api_base),
            client_id=fake.client_id,
            client_secret=fake.client_secret,
        )

    @property
    def api_url(self) -> str:
        """The protected resource every scenario requests."""
        return self.api_base + "/payments"


class ServerProcess:
    """The fake providers in a child process; a context manager.

    Args:
        pin: Pin the child to the last core and this process to the others
            (when there are at least two), so that they never share a core.
        lifetimes: The servers to run, by name, and their tokens' lifetimes.
        clients: More ``(client_id, client_secret)`` pairs every server
            accepts, so that its counts can tell clients apart
            (:meth:`client_stats`).
        token_delays: Seconds each named server holds every token request
            before answering (none when a server is not named).
    """

    def __init__(
        self,
        *,
        pin: bool = True,
        lifetimes: Mapping[str, float] = LIFETIMES,
        clients: Sequence[tuple[str, str]] = (),
        token_delays: Mapping[str, float] | None = None,
    ) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.pinned = pin and len(cores) >= 2
        self._original_cpus = set(cores)
        self._client_cpus = set(cores[:-1]) if self.pinned else set(cores)
        delays = token_delays or {}
        servers = {
            name: functools.partial(
                fake,
                lifetime,
                list(clients),
                delays.get(name, 0.0),
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
            )
            for name, lifetime in lifetimes.items()
        }
        self._fakes = FakeProviderProcess(
            servers, cpu=cores[-1] if self.pinned else None, name="bench-server"
        )
        self.endpoints: dict[str, Endpoint] = {}

    def __enter__(self) -> Self:
        self._fakes.__enter__()
        self.endpoints = {name: Endpoint.of(e) for name, e in self._fakes.endpoints.items()}
        os.sched_setaffinity(0, self._client_cpus)
        return self

    def cpu_time(self) -> float:
        """CPU seconds the server process has used so far (from ``/proc``)."""
        with open(f"/proc/{self._fakes.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def machine_busy() -> float:
        """CPU seconds every core of the machine has been busy so far (``/proc/stat``)."""
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def stats(self, name: str) -> Counters:
        """One server's counters, now."""
        return self._fakes.counters()[name]

    def client_stats(self, name: str) -> ClientCounters:
        """One server's per-client counters (token calls, accepted API calls), now."""
        return self._fakes.client_counters()[name]

    def __exit__(self, *exc_info: object) -> None:
        os.sched_setaffinity(0, self._original_cpus)
        self._fakes.__exit__(*exc_info)
