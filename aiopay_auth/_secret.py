"""A string that will not show itself by accident."""

from __future__ import annotations

import hashlib
from typing import Final, final


__all__ = ["Secret", "fingerprint"]


def fingerprint(value: str) -> str:
    """Return a short, stable, non-reversible label for a secret value.

    Twelve hex digits of its SHA-256: enough to tell two tokens apart in a
    log, useless for recovering either.
    """
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@final
class Secret:
    """A credential (client secret, password, refresh token) kept out of sight.

    ``repr()`` and ``str()`` show ``Secret('***')``; the value itself only
    comes out through :meth:`reveal`, which the library calls at the one
    place it must: building the token request. Two secrets are equal when
    their values are.

    Args:
        value: The secret text.
    """

    __slots__ = ("_value",)
    _value: Final[str]

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):  # for untyped callers
            msg = f"Secret takes a str, not {type(value).__name__}"  # type: ignore[unreachable]
            raise TypeError(msg)
        self._value = value

    def reveal(self) -> str:
        """Return the secret text itself. Never log what this returns."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """A short non-reversible label (see :func:`fingerprint`)."""
        return fingerprint(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        return (Secret, (self._value,))
