"""Every example the documentation includes runs, so the docs cannot rot.

Each script in ``examples/`` runs in a subprocess with this interpreter and
must exit 0, print what its page says it prints, and write nothing to
stderr (no traceback, no unclosed session). The pages must include only
examples that exist, and every example must be on a page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .redis_server import (
    SENTINEL_SERVICE,
    RedisClusterServers,
    RedisSentinelServers,
    RedisServer,
)


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
TIMEOUT = 30.0  # each example takes under 5 s; the bound only stops a hang

# What each example must print. A pytest module runs under pytest.
EXPECTED: dict[str, tuple[str, ...]] = {
    "tutorial.py": (
        "first token: fingerprint=",
        "first request: 200 {'ok': True, 'path': "
        "'/api/v1/paymentmethods/checkout/v1/transactions'}",
        "health: state=fresh fetches=1",
    ),
    "cm.py": ("200 of 200 checkouts got 200", "token calls: 1, 401s: 0"),
    "vonage.py": (
        "    cc emea: https://emea.cc.vonage.com/Auth/connect/token -> https://emea.cc.vonage.com",
        "legacy emea: https://emea.newvoicemedia.com/auth/connect/token"
        " -> https://emea.api.newvoicemedia.com",
        "token_url moved alone: ConfigError",
        "token request headers: ['Accept', 'Authorization', 'Content-Type']",
        "payment request: 200",
        "vonage-emea: token_type='bearer' lifetime=7199s",
    ),
    "payme.py": (
        "pre-production: https://auth.preprod.alignet.io/token"
        " audience=https://api.preprod.alignet.io/ ALG-API-VERSION=1709847567",
        "    production: https://auth.alignet.io/token"
        " audience=https://api.alignet.io/ ALG-API-VERSION=1709847567",
        "first token has a refresh token: True",
        "refreshed before expiry: True",
        "refresh token rotated: True",
        "refused: []",
    ),
    "oro.py": (
        "GET /admin/api/orders: 200, oro-backoffice token",
        "GET /api/products: 200, oro-storefront token",
        "GET /echo-headers got a token: False",
    ),
    "generic.py": (
        "acme: grant=client_credentials client_auth=basic",
        "acme-user: grant=password client_auth=body",
        "POST /api/payments: 200",
        "GET /api/users/me: 200",
        "acme-user got a refresh token: True",
        "refused: []",
    ),
    "merchants.py": (
        "40 of 40 charges got 200",
        "no merchant chosen: TenantRequiredError",
        "merchant-1 after rotation: 200",
        "merchants left: 39",
        "token calls per merchant: [1, 2]",
        "most token calls at once: 4",
        "charges by merchant-3: 1",
    ),
    "own_session.py": ("requests OK", "expired tokens sent: 0\n401s: 0\n"),
    "httpx_client.py": (
        "50 of 50 payments got 200",
        "after a revocation: 200, token calls: 2",
        "a stream after a revocation: 401, not resent",
        "/echo-headers got a token: False",
        "recoveries: 1, unreplayable: 1",
    ),
    "refresh_policy.py": (
        "      1 s token: refreshed   0.5 s before expiry",
        "   3600 s token: refreshed 600.0 s before expiry",
        "live token: refresh due 2939 to 2999 s",
    ),
    "logging_stdlib.py": (
        "DEBUG   aiopay_auth.token_fetched provider='cm' fingerprint=",
        "WARNING aiopay_auth.fetch_failed provider='cm'",
        "INFO    aiopay_auth.recovered provider='cm' after_failures=1",
        "fields of the failure: {'provider': 'cm'",
    ),
    "logging_structlog.py": (
        '"event": "aiopay_auth.token_fetched", "level": "debug"',
        '"kind": "throttled"',
        '"event": "aiopay_auth.recovered", "level": "info"',
    ),
    "telemetry.py": (
        "GET: 200",
        "aiopay_auth.token.fetches {'aiopay_auth.provider': 'cm'} = 2",
        "aiopay_auth.auth.recoveries {'aiopay_auth.provider': 'cm'} = 1",
        "span POST client_credentials success",
    ),
    "telemetry_prometheus.py": ('aiopay_auth_token_fetches_total{aiopay_auth_provider="cm",',),
    "health.py": (
        "just added      starting",
        "refresh failed  degraded",
        "server_error: [cm] token endpoint answered HTTP 500",
        "GET after revocation: 200",
        "401s=1 resent=1",
        "closed          closed",
    ),
    "test_worker.py": ("4 passed",),
    "fleet.py": (
        "both workers use the same token: True",
        "store: shared shared",
    ),
    "fleet_cluster.py": (
        "both workers use the same token: True",
        "token, lease and channel in one slot: True",
        "store: shared shared",
    ),
    "fleet_sentinel.py": (
        "both workers use the same token: True",
        "store: shared shared",
    ),
    "network.py": (
        "payment: 200 {'stamped': True}",
        "system CAs only: TokenTLSError",
        "failed: certificate verify failed: ",
        "kind=tls",
        "proxy: Network(proxy='http://proxy.internal:3128'",
        "password shown: False",
    ),
    "client_assertions.py": (
        "key shown: False",
        "assertion: alg=RS256 kid=k-2026 iss=merchant-7 lifetime=60s",
        "tokens: tok-1 tok-2",
        "distinct jti: 2",
    ),
    "mtls.py": (
        "token request fields: ['client_id', 'grant_type']",
        "API with the certificate: 200",
        "API without the certificate: 401",
    ),
}

INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)")
CODE_FENCE = re.compile(r"^\s*```+\s*\{?(?:code-block\}\s*)?(python|py|pycon)\b", re.MULTILINE)


def command(script: str) -> list[str]:
    path = str(EXAMPLES / script)
    if script.startswith("test_"):
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path]
    return [sys.executable, path]


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_and_prints_what_the_docs_say(
    script: str, request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url}
    if script == "fleet_cluster.py":  # the cluster and Sentinel start only for their example
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        env["REDIS_CLUSTER_URL"] = cluster.url
    if script == "fleet_sentinel.py":
        sentinel: RedisSentinelServers = request.getfixturevalue("redis_sentinel")
        env["REDIS_SENTINEL"] = f"127.0.0.1:{sentinel.sentinel_port}"
        env["REDIS_SENTINEL_SERVICE"] = SENTINEL_SERVICE
    result = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        command(script),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "" == result.stderr
    for text in EXPECTED[script]:
        assert text in result.stdout, f"{text!r} not in the output:\n{result.stdout}"


def test_every_example_is_run() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.py"))


def included_examples() -> set[str]:
    found: set[str] = set()
    for page in DOCS.rglob("*.md"):
        for target in INCLUDE.findall(page.read_text(encoding="utf-8")):
            path = (page.parent / target).resolve()
            assert path.is_file(), f"{page.relative_to(ROOT)} includes missing {target}"
            if path.parent == EXAMPLES:
                found.add(path.name)
    return found


def test_every_example_is_on_a_page() -> None:
    assert sorted(EXPECTED) == sorted(included_examples())


def test_the_pages_hold_no_untested_python() -> None:
    # Python on a page comes from examples/ through literalinclude, never
    # from a fenced block that nothing runs.
    pages = [
        page.relative_to(ROOT).as_posix()
        for page in DOCS.rglob("*.md")
        if "_build" not in page.parts and CODE_FENCE.search(page.read_text(encoding="utf-8"))
    ]
    assert [] == pages
