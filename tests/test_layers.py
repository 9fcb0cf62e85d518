"""The client-agnostic modules import no HTTP client (docs/design.md, "Module map").

Each is imported in a fresh interpreter, and aiohttp must not be loaded
afterwards. The package root is made importable without running its
``__init__`` (which re-exports ``TokenManager`` and ``BearerAuth`` and so
loads aiohttp for ``import aiopay_auth``): what is checked is each
module's own import graph, the seam an adapter for another client builds
on. The map's marks are checked against the same list, so the page and
the seam stay one.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aiopay_auth


PACKAGE = Path(aiopay_auth.__file__).parent
DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"

AGNOSTIC = [
    "aiopay_auth.exceptions",
    "aiopay_auth._secret",
    "aiopay_auth._check",
    "aiopay_auth._status",
    "aiopay_auth._scope",
    "aiopay_auth._token",
    "aiopay_auth._policy",
    "aiopay_auth._assertion",
    "aiopay_auth._client_auth",
    "aiopay_auth._provider",
    "aiopay_auth._oauth",
    "aiopay_auth._source",
    "aiopay_auth._health",
    "aiopay_auth._log",
    "aiopay_auth._holder",
    "aiopay_auth._writer",
    "aiopay_auth._tenant_holder",
    "aiopay_auth._step",
    "aiopay_auth._refresh",
    "aiopay_auth._routes",
    "aiopay_auth._gate",
    "aiopay_auth._limit",
    "aiopay_auth._schedule",
    "aiopay_auth.fleet",
    "aiopay_auth.providers",
]

# Import *module* with the package root registered but not run; print the
# HTTP client modules that got loaded.
_PROBE = """
import importlib, importlib.util, sys
package = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "aiopay_auth", package + "/__init__.py", submodule_search_locations=[package]
)
sys.modules["aiopay_auth"] = importlib.util.module_from_spec(spec)
importlib.import_module(sys.argv[2])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "httpx")))
"""


def loaded_http_clients(module: str) -> str:
    """The HTTP client modules loaded by importing *module* in a fresh interpreter."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-c", _PROBE, str(PACKAGE), module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("module", AGNOSTIC)
def test_a_client_agnostic_module_imports_no_http_client(module: str) -> None:
    assert "[]" == loaded_http_clients(module)


def test_the_probe_sees_a_module_that_imports_aiohttp() -> None:
    assert "'aiohttp'" in loaded_http_clients("aiopay_auth._middleware")


def test_the_module_map_marks_exactly_these_modules() -> None:
    # Rows read "| `_scope.py` | concern | may import | yes |".
    marked = set()
    for row in re.findall(r"^\| `([\w/.*]+)` \|.*\| yes \|$", DESIGN.read_text(), re.MULTILINE):
        name = row.removesuffix(".py").removesuffix("/*").replace("/", ".")
        marked.add(f"aiopay_auth.{name}")
    assert sorted(AGNOSTIC) == sorted(marked)


# A holder's state has one writer: the module that defines it (docs/design.md,
# "One writer per state"). Elsewhere a holder is read through its public face,
# and written only through its writer half's methods.
HOLDER_MODULES = {"_holder.py", "_writer.py", "_tenant_holder.py"}


def _is_holder(node: ast.expr) -> bool:
    """Whether *node* names a holder: ``holder``, ``self._holder``, ``slot.holder``, ..."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name.lower().endswith("holder")


def holder_state_touched(source: str) -> list[str]:
    """Each place in *source* that writes a holder's attribute or reads a private one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not _is_holder(node.value):
            continue
        if isinstance(node.ctx, ast.Store | ast.Del) or node.attr.startswith("_"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_but_the_holders_own_touches_a_holders_state() -> None:
    touched = {
        str(path.relative_to(PACKAGE)): places
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in HOLDER_MODULES
        and (places := holder_state_touched(path.read_text(encoding="utf-8")))
    }
    assert {} == touched


def test_the_check_sees_a_write_and_a_private_read() -> None:
    source = "holder.current = None\nself._holder._fetched.fetches += 1\nx = slot.holder.name\n"
    assert ["line 1: holder.current", "line 2: self._holder._fetched"] == sorted(
        holder_state_touched(source)
    )
