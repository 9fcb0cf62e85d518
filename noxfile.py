"""Development sessions: ``nox`` runs lint, typecheck and tests.

Every session runs on the interpreter that runs nox (``python3 -m nox``), so
the README's command works wherever a supported Python is the ``python3`` on
the path, and fails loudly, rather than skipping every session and exiting
0, where it is not.
"""

from __future__ import annotations

import sys

import nox


nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
# A session whose interpreter is missing fails the run instead of being skipped.
nox.options.error_on_missing_interpreters = True

MIN_PYTHON = (3, 11)
if sys.version_info < MIN_PYTHON:
    sys.exit(
        f"aiopay_auth needs Python >= {'.'.join(map(str, MIN_PYTHON))}; "
        f"nox runs on {sys.version.split()[0]} ({sys.executable})"
    )
# The interpreter running nox: never a version that may be missing here.
PYTHON = sys.executable
SOURCES = ["aiopay_auth", "tests", "benchmarks", "examples", "docs/conf.py", "noxfile.py"]
PYPROJECT = nox.project.load_toml("pyproject.toml")


def group(name: str) -> list[str]:
    """The requirements of one PEP 735 dependency group."""
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff: lint rules and formatting."""
    session.install(*group("lint"))
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy --strict on the package and the tests."""
    session.install("-e", ".", *group("typecheck"))
    session.run("mypy", "aiopay_auth", "tests")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite with branch coverage; fails under 90 %."""
    session.install("-e", ".", *group("tests"))
    # coverage runs pytest (rather than pytest-cov) so that it already
    # measures when pytest imports our registered plugin, and the package.
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=90")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the demo: four fake providers, a worker fan, a summary table."""
    session.install(".")
    session.run("aiopay-auth", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against raw aiohttp and peers; ``nox -s bench -- --quick`` for a smoke run."""
    session.install("-e", ".", *group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site, warnings as errors, into docs/_build/html."""
    session.install("-e", ".", *group("docs"))
    session.run(
        "sphinx-build",
        "--fresh-env",  # every page is read again, so no warning hides in a cache
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


# Mutation testing: each core module with the fast tests that exercise it. mutmut
# maps every mutated function to the tests that call it, so a mutant runs only
# those (fastest first, stopping at the first failure). The slow matrices
# (faults, concurrency, soak, fleet processes) stay out. Each module's time on
# the loaded 2-core machine is in docs/mutants.md; fleet, the longest (12 min),
# runs on its own (`nox -s mutants -- fleet`), and a few modules can be named
# (`nox -s mutants -- _holder _routes`) to keep a run short.
MUTANT_TESTS: dict[str, list[str]] = {
    "_policy": ["tests/test_policy.py"],
    "_oauth": ["tests/test_oauth.py", "tests/test_parser_properties.py", "tests/test_profiles.py"],
    "_holder": [
        "tests/test_holder.py",  # the holder on an injected clock: errors, counters, health
        "tests/test_refresh.py",
        "tests/test_manager.py",
        "tests/test_tenants.py",  # rotation and removal (8 s)
        "tests/test_middleware.py",
        "tests/test_hostile_api.py",  # the 401 rule (resend_after_401): backoff, late 401s
        "tests/test_clients.py",  # the same rule through both clients
        "tests/test_api.py",
    ],
    # The holder's writer half, split from _holder after its last score: the same tests.
    "_writer": [
        "tests/test_holder.py",
        "tests/test_refresh.py",
        "tests/test_tenants.py",
        "tests/test_manager.py",
    ],
    "_refresh": [
        "tests/test_refresher.py",  # grants, delays and log fields on an injected clock
        "tests/test_manager.py",
    ],
    # The refresher's per-fetch rules, shared with the tenants' schedule.
    "_step": ["tests/test_refresher.py", "tests/test_manager.py", "tests/test_tenants_schedule.py"],
    "_middleware": [
        "tests/test_middleware.py",
        "tests/test_hostile_api.py",  # replay, refusal backoff, by-hand tokens, redirects
        "tests/test_pool.py",
        "tests/test_api.py",
    ],
    "_pool": ["tests/test_pool.py", "tests/test_middleware.py"],
    # The one URL scope rule, which BearerAuth's table and Provider.in_scope use.
    "_scope": ["tests/test_scope.py", "tests/test_profiles.py", "tests/test_middleware.py"],
    # The routing both clients share: scope lookups, conflicting claims, our own tokens.
    "_routes": [
        "tests/test_routes.py",  # a Tenants set and a provider in one middleware
        "tests/test_middleware.py",
        "tests/test_hostile_api.py",
        "tests/test_clients.py",
    ],
    # The FIFO gate of both clients' pools (aiohttp's FairPool, httpx's gated client).
    "_gate": ["tests/test_pool.py", "tests/test_httpx_pool.py", "tests/test_config_types.py"],
    # What a token endpoint's status means: the parser's, health's and the tenants' one rule.
    "_status": ["tests/test_oauth.py", "tests/test_parser_properties.py", "tests/test_holder.py"],
    "_manager": [
        "tests/test_manager_wiring.py",  # its sessions, bounds, log and misuse errors
        "tests/test_manager.py",
        "tests/test_tenants.py",  # add_tenants() and its sets
        "tests/test_refresher.py",
        "tests/test_network.py",  # the token and API sessions' network options
        "tests/test_config_types.py",  # the constructor's and session()'s checks
        "tests/test_api.py",
    ],
    # The fast fleet tests (single redis-server, each under a second): the slow
    # ones (several seconds of token lifetimes, Cluster and Sentinel set-ups,
    # started again in every mutant's fork) would take hours over ~600 mutants.
    "fleet": [
        "tests/test_fleet_units.py",
        # a tenant's rotation through the fleet: its key set, its own request, the settling
        "tests/test_tenants_fleet.py::test_a_rotation_in_two_workers_is_fetched_once_and_both_rotations_return",
        "tests/test_tenants_fleet.py::test_rotate_never_returns_a_token_another_worker_asked_for_with_the_old_secret",
        "tests/test_tenants_fleet.py::test_a_lease_settled_after_a_rotation_stores_only_the_token_fetched_under_it",
        "tests/test_fleet.py::test_merchants_told_apart_only_by_a_token_request_detail_never_share_a_key",
        *(
            f"tests/test_fleet.py::test_{name}"
            for name in (
                "keys_hold_no_secret_and_tokens_are_encrypted",
                "bad_configuration_is_refused",
                "every_key_of_a_credential_shares_one_cluster_slot",
                "a_redis_error_the_fleet_does_not_know_means_fetching_locally",
                "a_bad_stored_entry_is_absent_fetched_over_and_overwritten",
                "a_planted_plausible_token_lives_a_day_at_most_and_a_key_refuses_it",
                "stored_times_are_checked_against_this_hosts_clock",
                "a_host_whose_clock_is_far_ahead_is_not_believed",
                "running_without_encryption_is_an_explicit_choice",
                "an_exclusive_lease_one_token_call_for_a_cold_fleet",
                "a_refresh_uses_the_fleets_newest_refresh_token_under_an_expiring_lease",
                "a_lease_that_is_never_released_is_waited_out_then_fetched_alone",
                "a_fetch_cancelled_by_an_anyio_scope_still_releases_its_lease",
                # the per-operation bound, the settling of a lease, the poll rate (2 to 4 s each)
                "a_lease_left_by_a_failed_store_is_settled_at_the_next_contact",
                "a_lease_taken_while_its_answer_was_lost_is_released_at_once",
                "a_waiting_member_keeps_to_its_poll_rate_whoever_publishes",
                "a_redis_that_answers_nothing_never_outlasts_the_served_token",
                "a_redis_that_stops_answering_during_a_wait_on_the_lease_never_outlasts_the_token",
                "a_redis_that_stops_answering_during_the_token_call_never_outlasts_the_served_token",
                "a_redis_that_never_answers_is_cut_off_at_redis_timeout",
                "a_waiting_member_wakes_on_the_announcement_not_the_poll",
                "announcements_wait_the_whole_interval_or_wake_on_one",
                "without_a_subscription_a_waiting_member_polls",
                "a_token_fetched_under_the_lease_is_kept_when_redis_dies_before_the_store",
                "after_a_refused_refresh_token_the_primary_grant_is_asked_not_the_stored_one",
                "each_refused_read_is_counted_and_the_first_is_a_warning",
                "a_stored_token_issued_at_the_same_instant_as_ours_is_not_newer",
                "a_lease_planted_with_no_expiry_is_removed",
                "one_credential_keeps_its_key_and_the_key_shows_no_secret",
            )
        ),
    ],
}
# Modules that are packages: every file of theirs is mutated.
MUTANT_PATHS = {"fleet": "aiopay_auth/fleet/*"}
MUTANT_DEFAULT = [module for module in MUTANT_TESTS if module != "fleet"]


@nox.session(python=PYTHON)
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the core modules; ``-- fleet`` or ``-- _pool`` picks.

    Each module is mutated in its own scratch copy of the tree, with only its tests
    selected, and its score (caught / mutants) and the mutants not caught are printed
    at the end. Without arguments: every module but ``fleet``, which takes as long
    as the others together and runs on its own (``nox -s mutants -- fleet``).
    """
    import shutil  # noqa: PLC0415 - kept local: this session is the only user
    from pathlib import Path  # noqa: PLC0415

    session.install("-e", ".", *group("tests"), *group("mutants"))
    chosen = session.posargs or MUTANT_DEFAULT
    unknown = sorted(set(chosen) - set(MUTANT_TESTS))
    if unknown:
        session.error(f"unknown modules {unknown}; choose from {sorted(MUTANT_TESTS)}")
    root = Path.cwd()
    scratch = Path(session.create_tmp()) / "mutants"
    scores: list[str] = []
    seen = ("killed", "timeout")  # caught; the rest (survived, no tests, ...) is listed
    for module in chosen:
        tree = scratch / module
        shutil.rmtree(tree, ignore_errors=True)
        for part in ("aiopay_auth", "tests"):
            shutil.copytree(root / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(root / "pyproject.toml", tree / "pyproject.toml")
        selection = "\n    ".join(MUTANT_TESTS[module])
        (tree / "setup.cfg").write_text(
            "[mutmut]\n"
            "source_paths = aiopay_auth\n"
            f"only_mutate = {MUTANT_PATHS.get(module, f'aiopay_auth/{module}.py')}\n"
            "also_copy = tests\n"
            # A mutant that makes a test hang (waiting out a 30 s bound) is cut
            # at 3 x (its tests' clean time + 1 s) and counted as caught.
            "timeout_multiplier = 1.5\n"
            # mutmut adds trampolines and names without docstrings to mutated classes
            "pytest_add_cli_args =\n"
            "    --deselect=tests/test_api.py::test_every_public_name_has_a_docstring\n"
            f"pytest_add_cli_args_test_selection =\n    {selection}\n"
        )
        with session.chdir(tree):
            session.run("mutmut", "run", "--max-children", "2")
            listing = session.run("mutmut", "results", "--all", "true", silent=True)
        verdicts = [line.strip().rpartition(": ") for line in str(listing).splitlines()]
        verdicts = [(name, status) for name, sep, status in verdicts if sep]
        caught = sum(status in seen for _, status in verdicts)
        timeouts = sum(status == "timeout" for _, status in verdicts)
        scores.append(
            f"{module}: {caught} caught / {len(verdicts)} mutants ({timeouts} by a timeout)"
        )
        scores += [f"    {status}: {name}" for name, status in verdicts if status not in seen]
    session.log("mutation scores\n" + "\n".join(scores))
