"""One worker process serving many merchants through a fleet, for tests/test_tenants_fleet.py.

Run from the repository root::

    python -m tests.tenants_worker --redis-port 6379 --base-url http://127.0.0.1:PORT \\
        --credentials merchants.json

*merchants.json* is a JSON list of ``[client_id, client_secret]`` pairs (a
file, so no secret travels on the command line). The worker adds every
merchant to one tenant set whose token source is
:meth:`RedisFleet.wrap <aiopay_auth.fleet.RedisFleet.wrap>`, sends one
``GET /api/merchants/<id>/ping`` per merchant through ``tokens.session``
(each choosing its merchant with ``middlewares=``), and writes one JSON
summary line on stdout, never a secret: each merchant's token as a
SHA-256 digest, the API statuses, where each token came from (``store``)
and the fleet's counts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio
from yarl import URL

from aiopay_auth import TokenHolder, TokenManager
from aiopay_auth._fetch import TokenSource
from aiopay_auth.fleet import RedisFleet, SharedTokenSource
from aiopay_auth.providers import generic


async def run(args: argparse.Namespace, credentials: list[list[str]]) -> dict[str, Any]:
    base = URL(args.base_url)
    client = redis.asyncio.Redis(host="127.0.0.1", port=args.redis_port)
    # A thousand members start at once on one loop: their Redis round trips
    # queue, which a loaded machine may hold past the default 0.5 s. This
    # run is about sharing, not about Redis answering in time.
    fleet = RedisFleet(client, unencrypted=True, redis_timeout=10.0)
    sources: list[SharedTokenSource] = []

    def wrap(holder: TokenHolder, inner: TokenSource) -> SharedTokenSource:
        source = fleet.wrap(holder, inner)
        sources.append(source)
        return source

    statuses: Counter[int] = Counter()
    try:
        async with TokenManager(token_source=wrap) as tokens:
            merchants = tokens.add_tenants("acme", api=base / "api", fetches_per_second=1000)
            for client_id, secret in credentials:
                merchants.add(
                    client_id,
                    generic.provider(
                        name="acme",
                        token_url=base / "oauth" / "token",
                        api=base / "api",
                        client_id=client_id,
                        client_secret=secret,
                    ),
                )
            queue: asyncio.Queue[str] = asyncio.Queue()
            for client_id, _ in credentials:
                queue.put_nowait(client_id)
            async with tokens.session(merchants) as session:

                async def send() -> None:
                    while not queue.empty():
                        key = queue.get_nowait()
                        url = base / "api" / "merchants" / key / "ping"
                        async with session.get(url, middlewares=merchants[key].middlewares) as r:
                            statuses[r.status] += 1

                await asyncio.gather(*(send() for _ in range(args.concurrency)))
            digests = {}
            for client_id, _ in credentials:
                token = merchants[client_id].holder.current
                assert token is not None
                digests[client_id] = hashlib.sha256(token.access_token.encode()).hexdigest()
            stores = Counter(h.store for h in merchants.health().values())
    finally:
        await client.aclose()
    return {
        "event": "summary",
        "tokens": digests,
        "statuses": {str(k): v for k, v in statuses.items()},
        "stores": dict(stores),
        "http_fetches": sum(s.http_fetches for s in sources),
        "shared_hits": sum(s.shared_hits for s in sources),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--credentials", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    credentials = json.loads(Path(args.credentials).read_text())
    summary = asyncio.run(run(args, credentials))
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
