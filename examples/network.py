"""Network options: a private CA, timeouts and a proxy, for tokens and API.

A bank's token endpoint and API serve HTTPS with a certificate from the
bank's private CA. Here ``trustme`` plays the CA and a small aiohttp app
on 127.0.0.1 plays the bank; in production, load the CA file instead:
``ssl.create_default_context(cafile="bank-ca.pem")``.
"""

import asyncio
import ssl

import trustme
from aiohttp import web

from aiopay_auth import Network, Provider, TokenManager
from aiopay_auth.exceptions import TokenUnavailableError


async def token(request: web.Request) -> web.Response:
    body = {"access_token": "tok-1", "token_type": "Bearer"}
    return web.json_response(body)


async def payments(request: web.Request) -> web.Response:
    auth = request.headers.get("Authorization", "")
    return web.json_response({"stamped": auth.startswith("Bearer ")})


async def main() -> None:
    bank_ca = trustme.CA()  # the bank's private CA
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    bank_ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/api/payments", payments)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    bank = Provider(
        name="bank",
        token_url=f"{base}/oauth/token",
        api=f"{base}/api",
        client_id="merchant-7",
        client_secret="s3cret",
    )

    # Trust the bank's CA; bound connecting and silences.
    trusted = ssl.create_default_context()
    bank_ca.configure_trust(trusted)  # or cafile="bank-ca.pem"
    network = Network(ssl=trusted, connect_timeout=5, read_timeout=10)

    async with TokenManager(network=network) as tokens:
        pay = tokens.add(bank)
        async with (
            tokens.session(pay, network=network) as http,
            http.post(bank.api[0] / "payments", json={}) as resp,
        ):
            print("payment:", resp.status, await resp.json())

    # Without the bank's CA, TLS refuses: typed, at once, not retried.
    async with TokenManager() as tokens:
        pay = tokens.add(bank)
        try:
            await pay.get()
        except TokenUnavailableError as exc:
            err = exc.last_error
            print(f"system CAs only: {type(err).__name__}")
            print(f"  {err}")
            print(f"  kind={pay.health().last_error_kind}")

    # Behind an egress proxy: its password never shows.
    egress = Network(proxy="http://worker:hunter2@proxy.internal:3128")
    print("proxy:", repr(egress).split(", ")[0])
    print("password shown:", "hunter2" in repr(egress))
    await runner.cleanup()


asyncio.run(main())
