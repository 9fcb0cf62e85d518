"""The public surface: complete, sorted, documented, typed."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import aiopay_auth
import aiopay_auth.exceptions
import aiopay_auth.providers
import aiopay_auth.testing
from aiopay_auth import TokenHolder
from aiopay_auth._writer import HolderWriter

from .endpoints import make_provider


PUBLIC_MODULES = [
    "aiopay_auth",
    "aiopay_auth.exceptions",
    "aiopay_auth.providers.cm",
    "aiopay_auth.providers.vonage",
    "aiopay_auth.providers.payme",
    "aiopay_auth.providers.oro",
    "aiopay_auth.providers.generic",
    "aiopay_auth.httpx",
    "aiopay_auth.testing",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_complete(name: str) -> None:
    # Its order is ruff's RUF022 (isort-style: constants, classes, functions).
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module)
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"
        if inspect.isclass(obj):
            for member_name, member in vars(obj).items():
                if member_name.startswith("_") or not callable(member):
                    continue
                assert inspect.getdoc(member), f"{name}.{attr}.{member_name} has no docstring"


def test_version_comes_from_the_installed_metadata() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", aiopay_auth.__version__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = aiopay_auth.nope


def test_package_is_marked_typed() -> None:
    assert (Path(aiopay_auth.__file__).parent / "py.typed").is_file()


def test_every_error_is_in_one_of_the_two_trees() -> None:
    # Run-time failures under AuthError; misconfiguration under ConfigError, apart from it.
    auth, config = aiopay_auth.AuthError, aiopay_auth.ConfigError
    for attr in aiopay_auth.exceptions.__all__:
        obj = getattr(aiopay_auth.exceptions, attr)
        if inspect.isclass(obj):
            assert issubclass(obj, auth) != issubclass(obj, config), attr
    assert issubclass(config, ValueError)
    assert issubclass(aiopay_auth.TenantRequiredError, config)
    assert not issubclass(aiopay_auth.TenantRequiredError, aiohttp.ClientError)


@pytest.mark.parametrize(
    ("client", "library"),
    [
        (aiopay_auth.ClientTokenUnavailableError, aiopay_auth.TokenUnavailableError),
        (aiopay_auth.ClientTenantRemovedError, aiopay_auth.TenantRemovedError),
    ],
)
def test_the_errors_of_aiohttp_requests_are_aiohttp_errors_too(
    client: type[Exception], library: type[Exception]
) -> None:
    assert issubclass(client, library)
    assert issubclass(client, aiohttp.ClientError)
    assert issubclass(client, aiopay_auth.ClientTokenUnavailableError)


@pytest.mark.parametrize(
    ("name", "instead"),
    [("FairGate", "aiopay_auth.httpx's client"), ("ProviderStats", "TokenHolder.health")],
)
def test_names_taken_out_of_all_still_import_with_a_warning(name: str, instead: str) -> None:
    assert name not in aiopay_auth.__all__
    vars(aiopay_auth).pop(name, None)  # as if never used in this process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace: dict[str, Any] = {}
        exec(f"from aiopay_auth import {name} as value", namespace)  # noqa: S102
    assert [f"aiopay_auth.{name} is deprecated"] == [
        str(w.message).split(" and goes")[0] for w in caught
    ]  # one use, one warning
    assert instead in str(caught[0].message)
    assert name == namespace["value"].__name__


def test_holder_stats_warns_and_is_a_copy_of_health() -> None:
    holder = TokenHolder(make_provider("http://127.0.0.1:9"))
    writer = HolderWriter(holder)
    writer.fetch_started()
    with pytest.warns(DeprecationWarning, match=r"use holder.health\(\)"):
        stats = holder.stats
    writer.fetch_started()
    assert (1, 2) == (stats.fetches, holder.health().fetches)  # a copy, not a live view
    with pytest.raises(AttributeError):
        stats.fetches = 5  # type: ignore[misc]
