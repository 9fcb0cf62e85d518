"""TLS servers on 127.0.0.1 with a throwaway CA (``trustme``), for the TLS tests.

* :func:`serve_tls`: a plain ``aiohttp.web`` app over TLS, optionally
  asking for client certificates (RFC 8705's mutual TLS).
* :func:`alerting_tls_server`: a raw asyncio server that does the TLS
  handshake itself (``ssl.MemoryBIO``) the way common servers do: when the
  client certificate is missing or refused, it sends TLS's alert and waits
  for the client to hang up, so the alert is not lost to a TCP reset.
  (asyncio's own TLS server closes at once without flushing the alert.)
  After a good handshake it answers every request with one canned token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import trustme
from aiohttp import web
from yarl import URL

from .loopback import tcp_server


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_context(ca: trustme.CA, *, client_certs: ssl.VerifyMode | None = None) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 from *ca*.

    With *client_certs* (``CERT_REQUIRED`` or ``CERT_OPTIONAL``), client
    certificates issued by *ca* are asked for.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_certs is not None:
        ca.configure_trust(context)
        context.verify_mode = client_certs
    return context


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """A client context trusting *ca*, presenting *cert* when given."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def peer_der(request: web.Request) -> bytes | None:
    """The DER of the client certificate on *request*'s connection, if any."""
    transport = request.transport
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


@contextlib.asynccontextmanager
async def serve_tls(routes: dict[str, Handler], context: ssl.SSLContext) -> AsyncIterator[URL]:
    """Run an aiohttp app with *routes* (path -> handler) over TLS; yield its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield URL.build(scheme="https", host="127.0.0.1", port=port)
    finally:
        await runner.cleanup()


@attrs.define
class AlertingServer:
    """A running :func:`alerting_tls_server`: its URL and what happened."""

    url: URL
    handshakes: int = 0
    failures: list[str] = attrs.Factory(list)  # the server side's ssl reasons


TOKEN_BODY = json.dumps({"access_token": "tok-mtls", "token_type": "Bearer", "expires_in": 60})


@contextlib.asynccontextmanager
async def alerting_tls_server(context: ssl.SSLContext) -> AsyncIterator[AlertingServer]:
    """Run the raw TLS server (see the module docstring)."""
    box = AlertingServer(URL("https://127.0.0.1"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve_one(context, box, reader, writer)
        finally:
            writer.close()

    async with tcp_server(handle) as port:
        box.url = URL.build(scheme="https", host="127.0.0.1", port=port)
        yield box


async def _serve_one(
    context: ssl.SSLContext,
    box: AlertingServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)

    async def flush() -> None:
        if data := outgoing.read():
            writer.write(data)
            await writer.drain()

    async def feed() -> bool:
        data = await reader.read(65536)
        if not data:
            return False
        incoming.write(data)
        return True

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await flush()
            if not await feed():
                return
        except ssl.SSLError as exc:
            box.failures.append(str(exc.reason))
            await flush()  # the alert
            # Read until the client hangs up: closing with its request unread
            # would reset the connection and lose the alert on its way.
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(5):
                    while await reader.read(65536):
                        pass
            return
    box.handshakes += 1
    await flush()
    request = b""

    def complete() -> bool:
        head, sep, body = request.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next(
            (
                int(v)
                for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                if k.strip().lower() == b"content-length"
            ),
            0,
        )
        return len(body) >= length

    while not complete():
        try:
            request += tls.read(65536)
        except ssl.SSLWantReadError:
            await flush()
            if not await feed():
                return
    response = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(TOKEN_BODY)}\r\nConnection: close\r\n\r\n{TOKEN_BODY}"
    )
    tls.write(response.encode())
    await flush()
