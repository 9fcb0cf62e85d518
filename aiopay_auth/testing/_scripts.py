"""A fake's scripted faults: canned token answers, queued or drawn at random, and playing one.

:class:`Scripted` is one canned answer. :class:`FaultScripts`, a base of
:class:`~aiopay_auth.testing.FakeProvider`, holds its queue of them and its
:meth:`~aiopay_auth.testing.FakeProvider.fail_randomly` rule (the public ``queue`` and
``fail_randomly``) and picks the fault, if any, that answers a token call; :func:`play` sends
it. Only :func:`play` and :func:`pause` do I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import deque
from collections.abc import Mapping

import attrs
from aiohttp import hdrs, web
from multidict import CIMultiDict

from ._dialects._wire import JSON


__all__ = ["FaultScripts", "Scripted", "pause", "play"]


@attrs.frozen(kw_only=True)
class Scripted:
    """A canned answer for one token call, queued with :meth:`FakeProvider.queue`.

    Attributes:
        status: HTTP status code to answer with.
        json: Body to send as JSON (``Content-Type: application/json`` unless ``headers``
            says otherwise). Mutually exclusive with ``body``.
        body: Raw body to send (for an HTML error page, truncated JSON, ...). Sent with
            ``Content-Type: text/plain; charset=utf-8`` unless ``headers`` sets one.
        headers: Extra response headers, e.g. ``{"Retry-After": "2"}``.
        delay: Seconds to wait before answering (or dropping), to simulate a slow endpoint.
        drop: Close the connection without sending any response.
        truncate: Send the status, the headers (with the full ``Content-Length``) and only
            this many bytes of the body, then reset the connection: a reset mid-body.
        chunked: Send the body with chunked transfer encoding (no ``Content-Length``).
    """

    status: int = 200
    json: object | None = None
    body: bytes | str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    drop: bool = False
    truncate: int | None = None
    chunked: bool = False

    def __attrs_post_init__(self) -> None:
        """Reject contradictory or impossible scripts early.

        Raises:
            ValueError: If both ``json`` and ``body`` are given, ``delay`` is negative or
                ``status`` is not a valid HTTP status code.
        """
        if self.json is not None and self.body is not None:
            raise ValueError("Scripted takes json or body, not both")
        if self.delay < 0:
            raise ValueError("Scripted.delay must not be negative")
        if self.truncate is not None and self.truncate < 0:
            raise ValueError("Scripted.truncate must not be negative")
        if not 100 <= self.status <= 599:
            raise ValueError("Scripted.status must be an HTTP status code (100-599)")


class FaultScripts:
    """A fake's scripted and random faults: a base of :class:`~aiopay_auth.testing.FakeProvider`."""

    chaos_faults: int  # the server's counter (set and documented there), counted here

    def __init__(self) -> None:
        """Start with nothing queued and no random faults."""
        super().__init__()
        self._scripts: deque[Scripted] = deque()
        self._chaos_rate = 0.0
        self._chaos_faults: tuple[Scripted, ...] = ()
        self._chaos_rng = random.Random()  # noqa: S311 - fault injection, not crypto

    def queue(self, *responses: Scripted) -> None:
        """Script the answers to the next token calls, first in first out.

        Each scripted response is consumed by one token call (counted in
        :attr:`token_calls`) instead of the normal handling: nothing is validated and no
        token is issued (an ``access_token`` in a scripted body is unknown to the API).

        Args:
            *responses: The answers, in the order the token calls will receive them.
        """
        self._scripts.extend(responses)

    def fail_randomly(self, rate: float, *faults: Scripted, seed: int | None = None) -> None:
        """Answer a random share of unscripted token calls with a random fault.

        Each token call that finds the :meth:`queue` empty is, with probability *rate*,
        answered by one of *faults* chosen at random (counted in :attr:`chaos_faults`);
        the others are handled normally. ``fail_randomly(0)`` turns it off.

        Args:
            rate: The share of token calls to fail, from 0 to 1.
            *faults: The faults to choose from.
            seed: Seed for a reproducible sequence.

        Raises:
            ValueError: If *rate* is outside [0, 1] or no fault is given for a rate above 0.
        """
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not faults:
            raise ValueError("fail_randomly needs at least one fault")
        self._chaos_rate = rate
        self._chaos_faults = faults
        self._chaos_rng = random.Random(seed)  # noqa: S311 - fault injection, not crypto

    def _next_fault(self) -> Scripted | None:
        """The fault that answers this token call: the next queued, else maybe a random one."""
        if self._scripts:
            return self._scripts.popleft()
        if self._chaos_rate and self._chaos_rng.random() < self._chaos_rate:
            self.chaos_faults += 1
            return self._chaos_rng.choice(self._chaos_faults)
        return None


async def pause(closing: asyncio.Event, seconds: float) -> None:
    """Wait *seconds*, or less if *closing* is set (the server is closing) meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), seconds)


def _encoded(script: Scripted) -> tuple[CIMultiDict[str], bytes]:
    """The headers and body *script* sends."""
    headers: CIMultiDict[str] = CIMultiDict(script.headers)
    body: bytes = b""
    if script.json is not None:
        body = json.dumps(script.json).encode()
        headers.setdefault(hdrs.CONTENT_TYPE, JSON)
    elif script.body is not None:
        body = script.body.encode() if isinstance(script.body, str) else script.body
        headers.setdefault(hdrs.CONTENT_TYPE, "text/plain; charset=utf-8")
    return headers, body


async def play(
    request: web.Request, script: Scripted, closing: asyncio.Event
) -> web.StreamResponse:
    """Answer *request* as *script* says; drop it instead once *closing* is set."""
    if script.delay > 0:
        await pause(closing, script.delay)
    if script.drop or closing.is_set():
        await request.release()
        transport = request.transport
        if transport is not None:
            transport.close()
        # Writing this response fails on the closed transport, which aiohttp treats
        # as a client disconnection: nothing reaches the client.
        return web.Response(status=500)
    headers, body = _encoded(script)
    if script.truncate is None and not script.chunked:
        return web.Response(status=script.status, body=body, headers=headers)
    response = web.StreamResponse(status=script.status, headers=headers)
    if script.chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(body)
    await response.prepare(request)
    if script.truncate is None:
        for start in range(0, len(body), 4096):
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response
    await response.write(body[: script.truncate])
    transport = request.transport
    if transport is not None:
        transport.abort()
    return response
