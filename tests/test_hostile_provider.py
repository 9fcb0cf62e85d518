"""A hostile token endpoint echoes our secrets back: none may reach an error, a repr or a log."""

from __future__ import annotations

import json

import aiohttp
import attrs
import pytest
from aiohttp import web

from aiopay_auth import Provider, Secret
from aiopay_auth._fetch import HttpTokenSource
from aiopay_auth.exceptions import TokenResponseError
from aiopay_auth.providers import generic, payme

from .loopback import Loopback, serve


pytestmark = pytest.mark.anyio

# Spaces defeat the token-shaped scrub; the long one is past every quote limit.
SPACEY = "open sesame quokka narwhal"
LONG = " ".join(["zebra wombat pangolin axolotl"] * 10)  # 299 characters
HEADER_KEY = "api key tapir okapi"
ASSERTION = "assert ibis heron egret " * 3
SECRETS = {
    "password": SPACEY,
    "client_secret": LONG,
    "assertion": ASSERTION,
    "X-Api-Key": HEADER_KEY,
}


def profile(server: Loopback) -> Provider:
    fields: dict[str, str | Secret] = {"assertion": Secret(ASSERTION), "audience": "https://a.test"}
    headers: dict[str, str | Secret] = {"X-Api-Key": Secret(HEADER_KEY), "X-Version": "7"}
    return Provider(
        name="hostile",
        token_url=server.url / "token",
        api=server.url / "api",
        client_id="client-1",
        client_secret=LONG,
        grant_type="password",
        username="merchant",
        password=SPACEY,
        encoding="json",
        extra_fields=fields,
        extra_headers=headers,
        envelope=payme.envelope_failure,
    )


def fragments(secret: str, size: int = 10) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def echo(where: str, text: str) -> web.Response:
    """Answer with *text* quoted where a careless provider would put it."""
    if where == "error_description":
        body = {"error": "invalid_request", "error_description": f"bad: {text}"}
        return web.json_response(body, status=400)
    if where == "token_type":
        return web.json_response({"access_token": "tok-1", "token_type": text})
    if where == "payme_envelope":
        status = {"code": "01", "message_ilgn": [{"locale": "es_PE", "value": f"bad: {text}"}]}
        return web.json_response({"success": False, "authorization": {"meta": {"status": status}}})
    return web.Response(status=500, text=f"bad: {text}", content_type="text/plain")


@pytest.mark.parametrize("which", sorted(SECRETS))
@pytest.mark.parametrize(
    "where", ["error_description", "token_type", "payme_envelope", "plain_text_body"]
)
async def test_echoed_secrets_are_redacted_before_they_are_cut(where: str, which: str) -> None:
    async def token(request: web.Request) -> web.Response:
        # What arrived on the wire, not what we think we sent.
        sent = dict(json.loads(await request.read()))
        sent["X-Api-Key"] = request.headers.get("X-Api-Key", "")
        return echo(where, sent[which])

    async with serve(token) as server, aiohttp.ClientSession() as session:
        source = HttpTokenSource(profile(server), session, timeout=5)
        with pytest.raises(TokenResponseError) as caught:
            await source.fetch(None)
    err = caught.value
    request = server.seen[0]
    body = json.loads(request.body)
    assert (SPACEY, LONG, ASSERTION) == (body["password"], body["client_secret"], body["assertion"])
    assert HEADER_KEY == request.headers["X-Api-Key"]
    assert "7" == request.headers["X-Version"]
    shown = "\n".join([str(err), repr(err), repr(err.args), str(err.description), str(err.error)])
    assert "[redacted]" in shown
    assert set() == {f for f in fragments(SECRETS[which]) if f in shown}


def test_secret_extras_never_show_in_repr_or_asdict() -> None:
    provider = generic.provider(
        name="g",
        token_url="https://auth.example/token",
        api="https://api.example",
        client_id="id",
        client_secret="cs-1",
        extra_fields={"assertion": Secret(ASSERTION)},
        extra_headers={"X-Api-Key": Secret(HEADER_KEY), "X-Plain-Key": "plain key value"},
    )
    shown = [repr(provider), str(provider), repr(attrs.asdict(provider))]
    for text in shown:
        assert ASSERTION not in text
        assert HEADER_KEY not in text
    # Names only in repr, even for values passed as plain strings.
    assert "plain key value" not in repr(provider)
    assert "X-Plain-Key" in repr(provider)
    assert Secret(HEADER_KEY) in provider.secrets()
    assert Secret("plain key value") not in provider.secrets()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirecting_token_endpoint_gets_a_typed_error_and_no_credentials_move(
    status: int,
) -> None:
    # 307/308 re-send the body, client secret and all, to wherever Location says.
    async def elsewhere(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "stolen", "token_type": "Bearer"})

    async with serve(elsewhere) as attacker:

        async def token(request: web.Request) -> web.Response:
            location = str(attacker.url / "token")
            return web.Response(status=status, headers={"Location": location})

        async with serve(token) as server, aiohttp.ClientSession() as session:
            source = HttpTokenSource(profile(server), session, timeout=5)
            with pytest.raises(TokenResponseError) as caught:
                await source.fetch(None)
    assert 1 == len(server.seen)
    assert [] == attacker.seen
    assert status == caught.value.status
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("encoding", ["form", "json"])
async def test_secrets_echoed_in_their_wire_encoding_are_redacted(encoding: str) -> None:
    # A server quoting the raw body shows the form- or JSON-encoded secret.
    password = 'p@ss "word" with spaces & more'

    async def token(request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        return echo("error_description", raw[raw.rindex("password") :])

    async with serve(token) as server, aiohttp.ClientSession() as session:
        provider = generic.provider(
            name="wire",
            token_url=server.url / "token",
            api=server.url / "api",
            client_id="id",
            client_secret="cs-1",
            username="u",
            password=password,
            client_auth="body",
            encoding="form" if encoding == "form" else "json",
        )
        with pytest.raises(TokenResponseError) as caught:
            await HttpTokenSource(provider, session, timeout=5).fetch(None)
    shown = f"{caught.value} {caught.value.description}"
    assert "[redacted]" in shown
    assert "spaces" not in shown
    assert "more" not in shown
