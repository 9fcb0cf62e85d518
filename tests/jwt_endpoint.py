"""A token endpoint that authenticates clients by JWT assertion, written from the RFCs.

RFC 7521 §4.2 and RFC 7523 §2.2 / §3, OIDC Core §9. It verifies the JWS
itself with ``cryptography`` and ``hmac`` (RFC 7518 §3), independently of the
JOSE library the SDK signs with, and answers ``invalid_client`` when:

* ``client_assertion_type`` is not the JWT bearer type;
* the algorithm is not the client's, or the signature does not verify;
* ``iss`` or ``sub`` is not the client id, or ``client_id`` differs;
* ``aud`` is not this token endpoint's URL;
* ``exp`` is missing or passed (no leeway), or ``iat`` is missing;
* the ``jti`` was seen before (a replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import attrs
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aiopay_auth._assertion import ASSERTION_TYPE


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@attrs.define
class Client:
    """A registered client: its id and how its assertions must be signed."""

    client_id: str
    alg: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | bytes  # bytes: the HS256 secret
    kid: str | None = None


@attrs.define
class Accepted:
    """One assertion the endpoint accepted."""

    grant_type: str
    header: dict[str, Any]
    claims: dict[str, Any]


@attrs.define
class JwtEndpoint:
    """The endpoint's state: its URL, clients, what it accepted and refused."""

    url: str
    clients: dict[str, Client]
    accepted: list[Accepted] = attrs.Factory(list)
    refused: list[str] = attrs.Factory(list)
    seen_jti: set[str] = attrs.Factory(set)
    issued: int = 0

    def _refuse(self, why: str) -> web.Response:
        self.refused.append(why)
        body = {"error": "invalid_client", "error_description": why}
        return web.json_response(body, status=401)

    def _verified(self, client: Client, signing_input: bytes, signature: bytes) -> bool:
        key = client.key
        try:
            if client.alg == "HS256":
                assert isinstance(key, bytes)
                good = hmac.new(key, signing_input, hashlib.sha256).digest()
                return hmac.compare_digest(good, signature)
            if client.alg == "RS256":
                assert isinstance(key, rsa.RSAPublicKey)
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            elif client.alg == "PS256":
                assert isinstance(key, rsa.RSAPublicKey)
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                key.verify(signature, signing_input, pss, hashes.SHA256())
            elif client.alg == "ES256":
                assert isinstance(key, ec.EllipticCurvePublicKey)
                if len(signature) != 64:  # RFC 7518 §3.4: R || S, 32 octets each
                    return False
                r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
                key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            else:
                return False
        except InvalidSignature:
            return False
        return True

    async def handle(self, request: web.Request) -> web.Response:
        """The token endpoint."""
        form = await request.post()
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self._refuse("client_assertion_type is not jwt-bearer")
        assertion = str(form.get("client_assertion", ""))
        parts = assertion.split(".")
        if len(parts) != 3:
            return self._refuse("client_assertion is not a compact JWS")
        header = json.loads(b64decode(parts[0]))
        claims = json.loads(b64decode(parts[1]))
        client = self.clients.get(str(claims.get("sub")))
        if client is None:
            return self._refuse("unknown client")
        if header.get("alg") != client.alg or header.get("kid") != client.kid:
            return self._refuse("wrong alg or kid")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        if not self._verified(client, signing_input, b64decode(parts[2])):
            return self._refuse("bad signature")
        if claims.get("iss") != client.client_id:
            return self._refuse("iss is not the client id")
        if form.get("client_id", client.client_id) != client.client_id:
            return self._refuse("client_id differs from sub")
        if claims.get("aud") != self.url:
            return self._refuse("aud is not the token endpoint")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            return self._refuse("exp and iat are required")
        if exp <= time.time():
            return self._refuse("assertion expired")
        jti = claims.get("jti")
        if not isinstance(jti, str) or jti in self.seen_jti:
            return self._refuse("jti reused")
        self.seen_jti.add(jti)
        grant = str(form.get("grant_type"))
        self.accepted.append(Accepted(grant, header, claims))
        self.issued += 1
        return web.json_response(
            {
                "access_token": f"tok-{self.issued}",
                "token_type": "Bearer",
                "expires_in": 60,
                "refresh_token": f"refresh-{self.issued}",
            }
        )
