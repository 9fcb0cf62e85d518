"""A small HTTP forward proxy on 127.0.0.1 that counts what passes through it.

Written from RFC 9110 §9.3.6 (``CONNECT``) and §7.1 (absolute-form targets),
and RFC 9110 §11.7 (``Proxy-Authorization``), not from aiohttp's code:

* ``CONNECT host:port`` opens a tunnel (HTTPS through the proxy);
* ``POST http://host:port/path`` is forwarded in origin form, one request
  per connection (``Connection: close``);
* with *credentials*, a request without the matching ``Proxy-Authorization``
  gets ``407 Proxy Authentication Required``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import attrs
from yarl import URL

from .loopback import tcp_server


@attrs.define
class ForwardProxy:
    """A running proxy: its URL and what it saw."""

    url: URL
    credentials: tuple[str, str] | None = None
    tunnels: list[str] = attrs.Factory(list)  # CONNECT targets, "host:port"
    forwarded: list[str] = attrs.Factory(list)  # absolute URLs forwarded
    refused: int = 0  # 407s sent
    auth_seen: list[str | None] = attrs.Factory(list)

    def url_with_credentials(self) -> str:
        """The proxy URL with ``user:password@`` in it."""
        assert self.credentials is not None
        user, password = self.credentials
        return str(self.url.with_user(user).with_password(password))

    def _authorized(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, _version = line.split(" ", 2)
        headers = [tuple(f.split(":", 1)) for f in fields if f]
        auth = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
        self.auth_seen.append(auth)
        if not self._authorized(auth):
            self.refused += 1
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            self.tunnels.append(target)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = URL(target)
            self.forwarded.append(target)
            up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
            keep = [
                f"{k}:{v}"
                for k, v in headers
                if not k.lower().startswith("proxy-") and k.lower() != "connection"
            ]
            origin_form = url.raw_path_qs
            up_writer.write(
                "\r\n".join(
                    [f"{method} {origin_form} HTTP/1.1", *keep, "Connection: close"]
                ).encode("latin-1")
                + b"\r\n\r\n"
            )
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@contextlib.asynccontextmanager
async def forward_proxy(credentials: tuple[str, str] | None = None) -> AsyncIterator[ForwardProxy]:
    """Run a forward proxy on a fresh 127.0.0.1 port."""
    proxy = ForwardProxy(URL("http://127.0.0.1"), credentials)
    async with tcp_server(proxy.handle) as port:
        proxy.url = URL.build(scheme="http", host="127.0.0.1", port=port)
        yield proxy
