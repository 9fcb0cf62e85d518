"""The ``aiopay-auth`` command line: the demo, the token command, the table."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiopay_auth._cli import main
from aiopay_auth._demo._config import DemoConfig
from aiopay_auth._demo._report import (
    fleet_summary_to_dict,
    format_fleet_table,
    format_merchants_table,
    format_progress,
    format_table,
    merchants_summary_to_dict,
    summary_to_dict,
)
from aiopay_auth._demo._results import (
    FleetRow,
    FleetSummary,
    MerchantsSummary,
    ProviderRow,
    Summary,
    exit_status,
)
from aiopay_auth._demo._run import run_demo
from aiopay_auth._secret import fingerprint
from aiopay_auth.testing import ClientCounters, FakeProvider, ServerCounters
from aiopay_auth.testing.pytest_plugin import FakeProviderFactory


pytestmark = pytest.mark.anyio

DEMO_PROVIDERS = {"cm", "vonage", "payme", "oro-backoffice", "oro-storefront"}
WRONG_SECRET = "not-the-secret-Zq7"


def _demo(*args: str) -> list[str]:
    # -W default: a ResourceWarning (unclosed socket, session, transport) would show on stderr.
    return [sys.executable, "-W", "default", "-m", "aiopay_auth", "demo", *args]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIOPAY_")}


def _run_demo(*args: str, timeout: float) -> dict[str, Any]:
    """Run the demo with *args* (``--json`` among them); its summary, once it exited 0 quietly."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        _demo(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        check=False,
    )
    assert "" == done.stderr
    assert 0 == done.returncode
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


# --- demo, end to end -------------------------------------------------------


def test_demo_runs_every_provider_without_a_failure_or_an_expired_token() -> None:
    duration, lifetime = 3.0, 1.0
    summary = _run_demo(
        "--duration",
        str(duration),
        "--lifetime",
        str(lifetime),
        "--concurrency",
        "200",
        "--pool",
        "50",
        "--json",
        "--quiet",
        timeout=60,
    )
    providers = summary["providers"]
    assert DEMO_PROVIDERS == set(providers)
    for name, row in providers.items():
        assert row["requests"] > 0, name
        assert 0 == row["failed"], (name, row["errors"])
        assert 0 == row["expired"], name
        assert row["token_fetches"] >= 1, name
        assert row["server_token_calls"] >= 1, name
        # Tokens live 1 s over a 3 s run: each provider refreshed.
        assert row["refreshes"] >= 1, name
        # One fetch per token lifetime, not one per request or per worker.
        assert row["token_fetches"] <= 2 * duration / lifetime + 2, name
    total = summary["total"]
    assert sum(row["requests"] for row in providers.values()) == total["requests"]
    assert 0 == total["failed"] == total["expired"]
    # The servers saw what the clients sent (a fetch cut short at exit may not arrive).
    assert 0 <= total["token_fetches"] - total["server_token_calls"] <= len(providers)
    assert 0 == summary["exit_status"]


def test_demo_ctrl_c_stops_cleanly() -> None:
    # Ctrl-C reaches the whole process group: the demo and its servers' child
    # process. It is sent once the run is under way, as its first progress
    # line on stderr shows (every 5 s when stderr is not a terminal): not
    # after a fixed sleep, which on a loaded machine may land while the
    # interpreter still starts, or in the few milliseconds of the child's
    # start, where a Ctrl-C is lost by design (see testing/_process.py).
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        _demo("--duration", "60", "--concurrency", "100", "--pool", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        start_new_session=True,
    )
    watchdog = threading.Timer(90, process.kill)  # a demo that never prints
    watchdog.start()
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert "requests" in first, first
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert 130 == process.returncode
    # A summary of the run so far, and on stderr nothing but progress lines.
    assert "(interrupted)" in out.splitlines()[0]
    assert all("requests" in line for line in err.splitlines()), err


def test_demo_fleet_shares_tokens_between_processes() -> None:
    # 5-second tokens (believed 4 s) are refreshed with about 2 s left, so a
    # Redis command of a refresh may take 1 s (half of what is left; the
    # demo's redis_timeout is 2 s). With 1-second tokens it was 0.25 s, which
    # a loaded machine under coverage overran: a member fetched alone and the
    # fleet's counts failed (3 runs in 3 on one core; none in 3 now). Over 8 s
    # each provider still refreshes about 5 times.
    duration, lifetime, processes = 8.0, 5.0, 2
    summary = _run_demo(
        "--fleet",
        str(processes),
        "--duration",
        str(duration),
        "--lifetime",
        str(lifetime),
        "--concurrency",
        "100",
        "--pool",
        "20",
        "--json",
        "--quiet",
        timeout=90,
    )
    assert processes == summary["config"]["fleet"] == summary["fleet"]["processes"]
    assert [50, 50] == summary["fleet"]["concurrency"]
    assert [10, 10] == summary["fleet"]["pool"]
    assert 0 == summary["fleet"]["ended_local"]
    providers = summary["providers"]
    assert DEMO_PROVIDERS == set(providers)
    for name, row in providers.items():
        assert row["requests"] > 0, name
        assert 0 == row["failed"], (name, row["errors"])
        assert 0 == row["expired"], name
        assert {"shared": processes} == row["stores"], name
        # One fetch per refresh for the whole fleet, where each process alone
        # would have sent every token request its refresher made. The
        # processes refresh over the same span (providers added on "go", kept
        # until all are finished), so every fetch is taken from Redis by the
        # other process, but for at most one refresh cut short by the shutdown.
        assert row["shared_hits"] >= 1, name
        assert row["token_fetches"] <= row["shared_hits"] + 1, name
        assert row["per_process_token_fetches"] == row["token_fetches"] + row["shared_hits"], name
        assert 2 * row["token_fetches"] <= row["per_process_token_fetches"] + 1, name
    total = summary["total"]
    print(
        f"\ndemo --fleet {processes}: {total['requests']:,} requests, {total['failed']} failed, "
        f"{total['token_fetches']} fleet token fetches, "
        f"{total['per_process_token_fetches']} per-process"
    )
    assert 0 == total["failed"] == total["expired"] == total["unauthorized"]
    assert total["token_fetches"] < total["per_process_token_fetches"]
    assert 2 * total["token_fetches"] <= total["per_process_token_fetches"] + len(providers)
    assert 0 <= total["token_fetches"] - total["server_token_calls"] <= processes * len(providers)
    assert summary["fleet"]["token_fetches"] == total["token_fetches"]
    assert 0 == summary["exit_status"]


def test_demo_merchants_routes_each_request_to_its_own_merchants_token() -> None:
    merchants, duration = 50, 2.0
    summary = _run_demo(
        "--merchants",
        str(merchants),
        "--duration",
        str(duration),
        "--concurrency",
        "50",
        "--pool",
        "20",
        "--json",
        "--quiet",
        timeout=60,
    )
    assert merchants == summary["merchants"] == summary["config"]["merchants"]
    by_merchant = summary["by_merchant"]
    assert {f"merchant-{i}" for i in range(1, merchants + 1)} == set(by_merchant)
    # The server counted each accepted API request under the merchant whose
    # token it carried: equal to what the workers saw succeed for that merchant.
    for key, row in by_merchant.items():
        assert row["ok"] > 0, key
        assert row["ok"] == row["server_api_calls"], (key, row)
        assert 1 == row["server_token_calls"], (key, row)  # 30-second tokens, a 2-second run
    assert summary["requests"] == sum(row["ok"] for row in by_merchant.values())
    assert 0 == summary["failed"] == summary["misrouted"] == summary["expired"]
    assert merchants == summary["token_fetches"] == summary["server_token_calls"]
    cap = summary["config"]["max_concurrent_fetches"]
    assert 4 == cap
    # The fake holds each token request 10 ms: the first tokens overlap there, up to the cap.
    assert 2 <= summary["max_token_calls_at_once"] <= cap
    assert 0 == summary["exit_status"]


def test_demo_merchants_table_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--merchants", "5", "--duration", "0.5", "--concurrency", "10", "--pool", "5"]
    assert 0 == main(["demo", *argv, "--servers", "inline", "--quiet"])
    out, err = capsys.readouterr()
    assert "" == err
    lines = out.splitlines()
    assert lines[0].startswith("aiopay-auth demo --merchants 5: one CM.com API, 10 workers")
    assert "tokens live 30 s" in lines[0]
    assert any(line.startswith("wrong merchant") and " 0 merchants" in line for line in lines)
    assert lines[-1].startswith("OK: every request carried its own merchant's token")
    assert 2 == main(["demo", "--merchants", "5", "--fleet", "2"])
    assert "--merchants and --fleet cannot be combined" in capsys.readouterr().err


def test_demo_fleet_without_redis_server_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there, redis-server least of all
    assert 2 == main(["demo", "--fleet", "2", "--duration", "1"])
    out, err = capsys.readouterr()
    assert "" == out
    assert [
        "aiopay-auth demo: error: --fleet needs redis-server on the PATH "
        "(e.g. apt-get install redis-server)"
    ] == err.splitlines()


def test_demo_with_servers_in_the_same_loop(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--duration", "1", "--lifetime", "0.5", "--concurrency", "50", "--pool", "10"]
    assert 0 == main(["demo", *argv, "--servers", "inline"])
    out, err = capsys.readouterr()
    assert "" == err  # no TTY, and less than one 5-second progress interval
    names = {line.split()[0] for line in out.splitlines()[4:9]}
    assert DEMO_PROVIDERS == names
    assert out.rstrip().endswith("OK: no failed request, no request refused for an expired token.")


async def test_demo_live_progress_line() -> None:
    progress = io.StringIO()
    config = DemoConfig(duration=1, lifetime=0.5, concurrency=50, pool=10)
    summary = await run_demo(config, progress=progress, live=True)
    assert 0 == exit_status(summary)
    assert all(row.requests > 0 and row.refreshes >= 1 for row in summary.rows)
    written = progress.getvalue()
    # Rewritten in place a few times per second, and wiped at the end.
    assert written.count("\r") >= 3
    assert "requests" in written
    assert "\n" not in written
    assert written.endswith("\r\x1b[K")


# --- demo, pure reporting ---------------------------------------------------


def _summary(**changes: Any) -> Summary:
    rows = (
        ProviderRow(provider="cm", server="cm", requests=1200, fetches=7, refreshes=6),
        ProviderRow(
            provider="oro-backoffice",
            server="oro",
            requests=1000,
            fetches=7,
            refreshes=6,
            max_wait=0.0425,
        ),
        ProviderRow(provider="oro-storefront", server="oro", requests=800, fetches=6, refreshes=5),
    )
    servers = {
        "cm": ServerCounters(token_calls=7, api_calls=1200),
        "oro": ServerCounters(token_calls=13, api_calls=1801, api_unauthorized=1),
    }
    fields: dict[str, Any] = {
        "config": DemoConfig(duration=2, lifetime=3, concurrency=50, pool=10),
        "elapsed": 2.0,
        "rows": rows,
        "servers": servers,
        **changes,
    }
    return Summary(**fields)


def test_table_has_a_row_per_provider_a_total_and_explains_shared_servers() -> None:
    lines = format_table(_summary()).splitlines()
    assert lines[0].startswith("aiopay-auth demo: 3 providers on 2 fake servers, 50 workers")
    table = {line.split()[0]: line.split()[1:] for line in lines[3:] if line[:1].isalpha()}
    # requests, req/s, failed, fetches client/server, refreshes, 401s all/expired, wait ms
    assert ["1,200", "600", "0", "7", "7", "6", "0", "0", "0.0"] == table["cm"]
    assert ["1,000", "500", "0", "7", "13*", "6", "1*", "0*", "42.5"] == table["oro-backoffice"]
    assert ["800", "400", "0", "6", "13*", "5", "1*", "0*", "0.0"] == table["oro-storefront"]
    # The total counts the shared server once.
    assert ["3,000", "1,500", "0", "20", "20", "17", "1", "0", "42.5"] == table["total"]
    assert any(
        line.startswith("* oro-backoffice, oro-storefront share the oro server") for line in lines
    )
    assert lines[-1].startswith("OK:")
    header = lines[3]
    widths = {len(line) for line in lines[3:8] if not line.startswith("-")}
    assert header.startswith("provider")
    assert len(widths) == 1, "rows are aligned"


def test_failures_and_expired_tokens_fail_the_demo() -> None:
    failing = ProviderRow(
        provider="cm", server="cm", requests=10, failed=2, errors=(("HTTP 500", 2),)
    )
    summary = _summary(rows=(failing,), servers={"cm": ServerCounters()})
    assert 1 == exit_status(summary)
    table = format_table(summary)
    assert "! cm: 2 x HTTP 500" in table
    assert table.endswith("FAILED: 2 failed requests, 0 refused for an expired token.")

    expired = _summary(servers={"cm": ServerCounters(api_expired=1), "oro": ServerCounters()})
    assert 1 == exit_status(expired)
    assert 1 == summary_to_dict(expired)["total"]["expired"]
    assert 0 == exit_status(_summary())
    assert 130 == exit_status(_summary(interrupted=True))


def _merchants_summary(**changes: Any) -> MerchantsSummary:
    fields: dict[str, Any] = {
        "config": DemoConfig(merchants=2, lifetime=30),
        "elapsed": 2.0,
        "cap": 4,
        "fetches_per_second": 200.0,
        "keys": ("merchant-1", "merchant-2"),
        "ok": (3, 5),
        "requests": 8,
        "failed": 0,
        "token_fetches": 2,
        "max_wait": 0.01,
        "server": ServerCounters(token_calls=2, tokens_issued=2, api_calls=8),
        "clients": ClientCounters(
            token_calls_by_client={"merchant-1": 1, "merchant-2": 1},
            api_calls_by_client={"merchant-1": 3, "merchant-2": 5},
            max_token_calls_in_flight=2,
        ),
    }
    return MerchantsSummary(**{**fields, **changes})


def test_a_request_with_another_merchants_token_or_over_the_cap_fails_the_merchants_demo() -> None:
    assert 0 == _merchants_summary().exit_status()
    # merchant-2's token went out on one of merchant-1's requests.
    swapped = ClientCounters(api_calls_by_client={"merchant-1": 2, "merchant-2": 6})
    wrong = _merchants_summary(clients=swapped)
    assert ("merchant-1", "merchant-2") == wrong.misrouted()
    assert 1 == wrong.exit_status()
    assert 2 == merchants_summary_to_dict(wrong)["misrouted"]
    assert "2 merchants served with another's token" in format_merchants_table(wrong)
    over = _merchants_summary(
        clients=ClientCounters(
            api_calls_by_client={"merchant-1": 3, "merchant-2": 5}, max_token_calls_in_flight=5
        )
    )
    assert 1 == over.exit_status()
    assert 130 == _merchants_summary(interrupted=True).exit_status()


def test_json_summary_carries_both_sides_per_provider() -> None:
    data = summary_to_dict(_summary())
    assert json.loads(json.dumps(data)) == data
    backoffice = data["providers"]["oro-backoffice"]
    assert backoffice["server_shared"]
    assert (7, 13, 42.5) == (
        backoffice["token_fetches"],
        backoffice["server_token_calls"],
        backoffice["max_wait_ms"],
    )
    assert not data["providers"]["cm"]["server_shared"]
    assert 20 == data["total"]["server_token_calls"]
    assert 1500.0 == data["total"]["requests_per_second"]


def test_fleet_table_sets_fleet_fetches_beside_per_process_ones() -> None:
    base = _summary()
    fleet = FleetSummary(
        summary=base,
        processes=4,
        concurrency=(13, 13, 12, 12),
        pools=(3, 3, 2, 2),
        fleet_rows=(
            FleetRow(provider="cm", shared_hits=21, alone=28, stores=("shared",) * 4),
            FleetRow(provider="oro-backoffice", shared_hits=21, alone=28, stores=("shared",) * 4),
            FleetRow(
                provider="oro-storefront",
                shared_hits=18,
                alone=24,
                stores=("shared", "shared", "shared", "local"),
            ),
        ),
    )
    lines = format_fleet_table(fleet).splitlines()
    assert lines[0].startswith("aiopay-auth demo --fleet 4: 4 worker processes share tokens")
    assert "50 workers (12-13 per process), pool 2-3 per process" in lines[1]
    table = {line.split()[0]: line.split()[1:] for line in lines[4:] if line[:1].isalpha()}
    # requests, req/s, failed, fetches fleet/server/per process, from redis, 401s, wait ms
    assert ["1,200", "600", "0", "7", "7", "28", "21", "0", "0", "0.0"] == table["cm"]
    assert ["3,000", "1,500", "0", "20", "20", "80", "60", "1", "0", "42.5"] == table["total"]
    assert any(
        line.startswith(
            "Fleet-wide: 20 token fetches where per-process fetching would have cost 80 "
            "(4.0x fewer); 1 provider-process pairs ended fetching alone"
        )
        for line in lines
    )
    assert lines[-1].startswith("OK:")
    data = fleet_summary_to_dict(fleet)
    assert json.loads(json.dumps(data)) == data
    assert {"shared": 3, "local": 1} == data["providers"]["oro-storefront"]["stores"]
    assert (20, 80, 1) == (
        data["fleet"]["token_fetches"],
        data["fleet"]["per_process_token_fetches"],
        data["fleet"]["ended_local"],
    )
    assert 4 == data["config"]["fleet"]
    assert list(data)[-1] == "exit_status"


def test_progress_line() -> None:
    line = format_progress(12.34, 45678, 3812.4, 23, 0)
    assert "12.3 s" in line
    assert "45,678 requests" in line
    assert "3,812 req/s" in line
    assert "23 token fetches" in line


# --- token ------------------------------------------------------------------


# What only the demo needs: the fake servers' aiohttp.web, the testing kit, the run.
_DEMO_ONLY = ("aiohttp.web", "aiopay_auth.testing", "aiopay_auth._demo.")
_QUICK_DEMO = ["demo", "--duration", "0.2", "--concurrency", "2", "--servers", "inline", "--quiet"]
_LOADED = (
    "import sys\n"
    "from aiopay_auth._cli import main\n"
    "main({argv!r})\n"
    "print(' '.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))\n"
)


@pytest.mark.parametrize("argv", [[], ["token", "--help"], ["token", "cm"]])
def test_the_token_command_does_not_import_the_demo(argv: list[str]) -> None:
    # A fresh interpreter: this one has long imported everything.
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", _LOADED.format(argv=argv, prefixes=_DEMO_ONLY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_clean_env(),  # no credentials: "token cm" stops at the usage error
    )
    # Only the demo's options, for the parser's defaults (plain data).
    assert ["aiopay_auth._demo._config"] == done.stdout.splitlines()[-1].split()


def test_the_demo_command_imports_the_demo() -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-c",
            _LOADED.format(argv=_QUICK_DEMO, prefixes=_DEMO_ONLY),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "aiohttp.web" in done.stdout.splitlines()[-1].split()


@pytest.fixture(name="env")
def _env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("AIOPAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


async def _main(*argv: str) -> int:
    # The CLI runs its own event loop, so it runs in a thread beside the fake's loop.
    return await anyio.to_thread.run_sync(main, list(argv))


def _credentials(env: pytest.MonkeyPatch, fake: FakeProvider, secret: str | None = None) -> None:
    env.setenv("AIOPAY_CLIENT_ID", fake.client_id)
    env.setenv("AIOPAY_CLIENT_SECRET", fake.client_secret if secret is None else secret)


async def test_token_prints_fingerprint_and_lifetime_not_the_token(
    fake_provider: FakeProviderFactory,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = await fake_provider("cm", lifetime=120)
    _credentials(env, fake)
    assert 0 == await _main("token", "cm", "--token-url", str(fake.token_url))
    out, err = capsys.readouterr()
    (issued,) = fake.issued_tokens
    fields = dict(line.split(None, 1) for line in out.replace("token type", "type").splitlines())
    # expires_in: 120, a whole number of seconds, is believed for 119 s.
    assert {"provider": "cm", "type": "Bearer", "lifetime": "119 s"}.items() <= fields.items()
    assert fingerprint(issued) == fields["fingerprint"]
    assert issued not in out + err
    assert fake.client_secret not in out + err
    assert "" == err


async def test_token_shows_the_token_only_when_asked(
    fake_provider: FakeProviderFactory,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = await fake_provider("cm", lifetime=60)
    _credentials(env, fake)
    assert 0 == await _main("token", "cm", "--token-url", str(fake.token_url), "--show-token")
    out, _ = capsys.readouterr()
    (issued,) = fake.issued_tokens
    assert f"access token  {issued}" in out
    assert fake.client_secret not in out


async def test_token_generic_password_grant_with_basic_auth(
    fake_provider: FakeProviderFactory,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = await fake_provider("rfc6749", lifetime=30)
    _credentials(env, fake)
    env.setenv("AIOPAY_USERNAME", fake.username)
    env.setenv("AIOPAY_PASSWORD", fake.password)
    assert 0 == await _main("token", "generic", "--token-url", str(fake.token_url))
    out, err = capsys.readouterr()
    assert "provider       generic" in out
    assert "refresh token  issued (fingerprint " in out
    (refresh,) = fake.issued_refresh_tokens
    for secret in (fake.client_secret, fake.password, refresh, *fake.issued_tokens):
        assert secret not in out + err


async def test_token_missing_secret_is_a_usage_error(
    fake_provider: FakeProviderFactory,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = await fake_provider("cm")
    env.setenv("AIOPAY_CLIENT_ID", fake.client_id)
    assert 2 == await _main("token", "cm", "--token-url", str(fake.token_url))
    out, err = capsys.readouterr()
    assert "" == out
    assert "aiopay-auth token: error: environment variable AIOPAY_CLIENT_SECRET is not set\n" == err
    assert 0 == fake.token_calls


async def test_token_wrong_secret_fails_with_the_providers_error_and_no_secret(
    fake_provider: FakeProviderFactory,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = await fake_provider("cm")
    _credentials(env, fake, secret=WRONG_SECRET)
    assert 1 == await _main("token", "cm", "--token-url", str(fake.token_url), "--timeout", "5")
    out, err = capsys.readouterr()
    assert "" == out
    assert 1 == len(err.splitlines())
    assert "invalid_client" in err
    assert "Traceback" not in err
    assert WRONG_SECRET not in err
    assert fake.client_secret not in err
    assert 1 == fake.token_calls  # invalid_client cannot heal: no retry, no wait


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cm", "--region", "emea"], "--region applies only to vonage"),
        (["vonage"], "vonage needs --region"),
        (["oro"], "oro needs --app-url"),
        (["generic"], "generic needs --token-url"),
        (["generic", "--token-url", "not a url"], "token_url must be an absolute http(s) URL"),
        (
            ["oro", "--app-url", "https://shop.example.com", "--client-auth", "basic"],
            "client_auth='basic' goes with encoding='form'",
        ),
    ],
)
def test_token_usage_errors(
    argv: list[str], message: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AIOPAY_CLIENT_ID", "someone")
    env.setenv("AIOPAY_CLIENT_SECRET", WRONG_SECRET)
    assert 2 == main(["token", *argv])
    out, err = capsys.readouterr()
    assert "" == out
    assert 1 == len(err.splitlines())
    assert message in err
    assert WRONG_SECRET not in err


def test_password_grant_needs_both_variables(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AIOPAY_CLIENT_ID", "someone")
    env.setenv("AIOPAY_CLIENT_SECRET", WRONG_SECRET)
    env.setenv("AIOPAY_USERNAME", "merchant")
    assert 2 == main(["token", "generic", "--token-url", "https://auth.example.com/token"])
    assert "AIOPAY_PASSWORD is not set" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["token", "paypal"])
    assert 2 == main(["demo", "--duration", "0"])
    assert 0 == main(["--help"])
    out, err = capsys.readouterr()
    assert "invalid choice: 'paypal'" in err
    assert "--duration: must be positive" in err
    assert "demo" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--merchants", "10001"], "--merchants: must be at most 10000, not 10001"),
        (["--merchants", "99999999999999999999"], "--merchants: must be at most 10000"),
        (["--merchants", "2.5"], "--merchants: not an integer: '2.5'"),
        (["--merchants", "many"], "--merchants: not a number: 'many'"),
        (["--lifetime", "0.1"], "--lifetime: must be at least 0.2, not 0.1"),
    ],
)
def test_demo_bounds_are_refused_at_once(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused by the parser, before anything starts: a huge N never builds
    # its credentials, a lifetime too short to use never runs.
    assert 2 == main(["demo", *argv])
    assert message in capsys.readouterr().err
