"""The provider dialects a :class:`~aiopay_auth.testing.FakeProvider` speaks, one module each.

Each module mirrors its production profile in :mod:`aiopay_auth.providers` and defines one
:class:`DialectRules`: the token and API paths, how a client authenticates, which grants,
scopes and fields the provider demands, how answers and errors are shaped, and the real
profile aimed at the fake (:func:`~aiopay_auth.testing.provider_for`). The shared server
(``_server.py``, ``_ledger.py``) and ``provider_for`` ask it and never compare dialect names.

Adding a provider: ``providers/x.py`` on the production side; here ``x.py`` plus its name in
:data:`Dialect` and one line in :data:`DIALECTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from . import cm, oro, payme, rfc6749, vonage
from ._base import DialectRules, Endpoint, TokenDesk
from ._wire import Rejection


__all__ = ["DIALECTS", "Dialect", "DialectRules", "Endpoint", "Rejection", "TokenDesk"]

Dialect = Literal["cm", "vonage", "payme", "oro", "rfc6749"]
"""The provider dialects a :class:`FakeProvider` can speak."""

DIALECTS: Final[Mapping[Dialect, DialectRules]] = {
    "cm": cm.CmRules(),
    "vonage": vonage.VonageRules(),
    "payme": payme.PaymeRules(),
    "oro": oro.OroRules(),
    "rfc6749": rfc6749.Rfc6749Rules(),
}
"""Each dialect's rules, by name."""
