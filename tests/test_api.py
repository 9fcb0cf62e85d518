"""The public surface: complete, sorted, documented, typed."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import aiohttp
import pytest

import aiopay_auth
import aiopay_auth.exceptions
import aiopay_auth.providers
import aiopay_auth.testing


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
