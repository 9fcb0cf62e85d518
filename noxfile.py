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
