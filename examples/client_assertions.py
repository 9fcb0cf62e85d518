"""Signed client assertions (private_key_jwt): no shared secret on the wire.

The client signs a short-lived JWT with its private key for every token
request (RFC 7523); the server holds only the public key. Here a small
aiohttp app on 127.0.0.1 plays the server: it verifies each assertion and
refuses a reused ``jti``. Needs ``pip install 'aiopay-auth[jwt]'``.
"""

import asyncio

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aiopay_auth import ClientAssertion, Provider, TokenManager


# The client's key pair; register the public half with the provider.
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = key.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
seen_jti: set[str] = set()


async def token(request: web.Request) -> web.Response:
    form = await request.post()
    claims = jwt.decode(
        str(form["client_assertion"]),
        key.public_key(),
        algorithms=["RS256"],
        audience=str(request.url),  # aud: this token endpoint
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )
    if claims["jti"] in seen_jti:
        return web.json_response({"error": "invalid_client"}, status=401)
    seen_jti.add(claims["jti"])
    header = jwt.get_unverified_header(str(form["client_assertion"]))
    print(
        f"assertion: alg={header['alg']} kid={header['kid']}"
        f" iss={claims['iss']} lifetime={claims['exp'] - claims['iat']}s"
    )
    n = len(seen_jti)
    return web.json_response({"access_token": f"tok-{n}"})


async def main() -> None:
    app = web.Application()
    app.router.add_post("/oauth/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"

    provider = Provider(
        name="acme",
        token_url=f"{base}/oauth/token",
        api=f"{base}/api",
        client_id="merchant-7",  # no client_secret
        client_auth="private_key_jwt",
        assertion=ClientAssertion(key=PRIVATE_PEM, alg="RS256", kid="k-2026"),
    )
    print("key shown:", "PRIVATE KEY" in repr(provider))
    async with TokenManager() as tokens:
        acme = tokens.add(provider)
        first = await acme.get()
        acme.invalidate(first)  # as after a 401: fetch another one
        second = await acme.get()
        print("tokens:", first.access_token, second.access_token)
    print("distinct jti:", len(seen_jti))
    await runner.cleanup()


asyncio.run(main())
