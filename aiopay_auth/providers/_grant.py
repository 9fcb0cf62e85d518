"""The one rule every profile uses to pick its primary grant."""

from __future__ import annotations

from .._provider import Grant
from .._secret import Secret


def primary_grant(username: str | None, password: str | Secret | None) -> Grant:
    """The password grant when either half of a login is given, else client credentials.

    Either half alone still picks the password grant, so that
    :class:`~aiopay_auth.Provider` reports the missing half instead of the
    login being silently ignored.
    """
    return "password" if username or password else "client_credentials"
