"""Sphinx configuration: MyST pages, autodoc with napoleon, the Furo theme.

The build needs no network: no intersphinx inventories are fetched, so
references to Python's and aiohttp's own types stay plain text.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles
from sphinx.util.typing import stringify_annotation


DOCS = Path(__file__).resolve().parent

project = "aiopay_auth"
author = "aiopay_auth developers"
copyright = "aiopay_auth developers"
release = _version("aiopay-auth")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# The benchmark page is written by `nox -s bench -- --publish` and may be
# missing from a checkout; its toctree entry is then skipped, not an error.
suppress_warnings = [] if (DOCS / "benchmarks.md").exists() else ["toc.not_readable"]

# --- MyST -------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# --- autodoc and napoleon ---------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False
napoleon_attr_annotations = True

# --- HTML -------------------------------------------------------------------

html_theme = "furo"
html_title = f"aiopay_auth {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_theme_options = {
    "source_directory": "docs/",
    "navigation_with_keys": True,
}
pygments_style = "friendly"
pygments_dark_style = "monokai"


# --- build hooks --------------------------------------------------------------

# Modules whose every public name (``__all__``) must appear in the reference.
REFERENCED_MODULES = (
    "aiopay_auth",
    "aiopay_auth.exceptions",
    "aiopay_auth.providers.cm",
    "aiopay_auth.providers.generic",
    "aiopay_auth.providers.oro",
    "aiopay_auth.providers.payme",
    "aiopay_auth.providers.vonage",
    "aiopay_auth.testing",
    "aiopay_auth.testing.pytest_plugin",
    "aiopay_auth.fleet",
)

_logger = logging.getLogger("aiopay_auth.docs")


def _documented(env: BuildEnvironment) -> set[str]:
    return set(env.get_domain("py").objects)  # type: ignore[attr-defined]


def _alias(target: str) -> str | None:
    """Where a name that is documented under another path is documented.

    ``aiopay_auth.TokenUnavailableError`` is documented in
    ``aiopay_auth.exceptions``, and a type hint's private path
    (``aiopay_auth._secret.Secret``) under the public one.
    """
    module, _, name = target.rpartition(".")
    if module == "aiopay_auth":
        exceptions = importlib.import_module("aiopay_auth.exceptions")
        if name in exceptions.__all__:
            return f"aiopay_auth.exceptions.{name}"
    elif module.startswith("aiopay_auth._"):
        package = importlib.import_module("aiopay_auth")
        if name in package.__all__:
            return _alias(f"aiopay_auth.{name}") or f"aiopay_auth.{name}"
    return None


def _resolve_alias(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = _alias(node.get("reftarget", ""))
    if target is None:
        return None
    node["reftarget"] = target
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )


def _public_link_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Show ``aiopay_auth.Secret``, not ``aiopay_auth._secret.Secret``, in type hints."""
    public = importlib.import_module("aiopay_auth").__all__
    for ref in doctree.findall(nodes.reference):
        if len(ref.children) != 1 or not isinstance(ref[0], nodes.Text):
            continue
        module, _, name = ref.astext().rpartition(".")
        if module.startswith("aiopay_auth._") and name in public:
            ref[0] = nodes.Text(f"aiopay_auth.{name}")


def _check_reference(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) for a public name missing from the reference."""
    documented = _documented(env)
    for modname in REFERENCED_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            full = f"{modname}.{name}"
            if full in documented or _alias(full) in documented:
                continue
            _logger.warning("public name %s is missing from the API reference", full)


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show a private base class (``exceptions._Error``) as its own public bases.

    ``ConfigError`` is shown as a ``ValueError`` and ``AuthError`` as an
    ``Exception``, not as subclasses of a name the reference cannot link.
    """
    index = 0
    while index < len(bases):
        base = bases[index]
        if not base.__name__.startswith("_"):
            index += 1
            continue
        others = bases[:index] + bases[index + 1 :]
        bases[index : index + 1] = [
            b for b in base.__bases__ if not any(issubclass(o, b) for o in others)
        ]


class ReexportedData(SphinxDirective):
    """``.. reexported-data:: aiopay_auth.HealthState <aiopay_auth._health>``.

    autodoc looks for a re-exported type alias's docstring in the module
    that re-exports it (``aiopay_auth``), finds none, and prints only "alias
    of ...". This directive reads the docstring from the defining module.
    """

    required_arguments = 2
    has_content = False

    def run(self) -> list[nodes.Node]:
        """Describe the alias as ``py:data`` with its own docstring."""
        name, defined_in = self.arguments[0], self.arguments[1].strip("<>")
        modname, _, attr = name.rpartition(".")
        value = getattr(importlib.import_module(modname), attr)
        analyzer = ModuleAnalyzer.for_module(defined_in)
        doc = analyzer.find_attr_docs().get(("", attr))
        if not doc:
            msg = f"{defined_in} has no docstring for {attr}"
            raise self.error(msg)
        lines = [
            f".. py:data:: {attr}",
            f"   :module: {modname}",
            f"   :type: {stringify_annotation(value, 'smart')}",
            "",
            *(f"   {line}" for line in doc),
        ]
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=name), node)
        return list(node.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and the hooks above."""
    app.add_directive("reexported-data", ReexportedData)
    app.connect("missing-reference", _resolve_alias)
    app.connect("doctree-resolved", _public_link_text)
    app.connect("env-check-consistency", _check_reference)
    app.connect("autodoc-process-bases", _public_bases)
    return {"parallel_read_safe": True}
