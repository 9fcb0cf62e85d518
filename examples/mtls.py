"""mTLS (RFC 8705): the client certificate authenticates, and binds the token.

The token endpoint demands a client certificate and binds each token to
its SHA-256 thumbprint; the API accepts the token only over a connection
that presents the same certificate. ``trustme`` plays the CA here; in
production, ``load_cert_chain("client.pem", "client.key")``.
"""

import asyncio
import base64
import hashlib
import ssl

import trustme
from aiohttp import web

from aiopay_auth import Network, Provider, TokenManager


bound: dict[str, str | None] = {}  # token -> x5t#S256 of its certificate


def thumbprint(request: web.Request) -> str | None:
    assert request.transport is not None
    tls = request.transport.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True)
    if der is None:
        return None
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def token(request: web.Request) -> web.Response:
    form = await request.post()
    print("token request fields:", sorted(form))
    issued = f"tok-{len(bound) + 1}"
    bound[issued] = thumbprint(request)
    return web.json_response({"access_token": issued})


async def payments(request: web.Request) -> web.Response:
    presented = request.headers["Authorization"].removeprefix("Bearer ")
    if bound.get(presented) != thumbprint(request):
        return web.json_response({"error": "invalid_token"}, status=401)
    return web.json_response({"paid": True})


runners: list[web.AppRunner] = []


async def serve(app: web.Application, tls: ssl.SSLContext) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    runners.append(runner)
    return f"https://127.0.0.1:{runner.addresses[0][1]}"


async def main() -> None:
    ca = trustme.CA()
    client_cert = ca.issue_cert("merchant-7.example", common_name="merchant-7")
    servers = {}
    for path, handler, mode in [
        ("/token", token, ssl.CERT_REQUIRED),
        ("/api/payments", payments, ssl.CERT_OPTIONAL),
    ]:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca.configure_trust(tls)
        tls.verify_mode = mode
        app = web.Application()
        app.router.add_post(path, handler)
        servers[path] = await serve(app, tls)

    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    client_cert.configure_cert(with_cert)  # load_cert_chain(...)
    mtls = Network(ssl=with_cert)
    provider = Provider(
        name="bank",
        token_url=servers["/token"] + "/token",
        api=servers["/api/payments"] + "/api",
        client_id="merchant-7",  # no secret: the certificate
        client_auth="tls_client_auth",
    )
    without_cert = ssl.create_default_context()
    ca.configure_trust(without_cert)
    url = provider.api[0] / "payments"
    async with TokenManager(network=mtls) as tokens:
        bank = tokens.add(provider)
        for label, tls in [("with", with_cert), ("without", without_cert)]:
            network = Network(ssl=tls)
            async with (
                tokens.session(bank, network=network) as http,
                http.post(url, json={"amount": 100}) as resp,
            ):
                print(f"API {label} the certificate: {resp.status}")
    for runner in runners:
        await runner.cleanup()


asyncio.run(main())
