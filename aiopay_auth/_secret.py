"""A string that will not show itself by accident."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Final, final
from urllib.parse import quote, quote_plus

from .exceptions import scrub


__all__ = ["Redactor", "Secret", "fingerprint"]


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


@final
class Redactor:
    """Quotes provider-supplied text safely: the one place that does it.

    :meth:`quote` first replaces every given secret, in each form it
    travels in (as is, form-encoded, percent-encoded, JSON-escaped), and
    only then flattens, scrubs and cuts the text with
    :func:`~aiopay_auth.exceptions.scrub`. Redacting after the cut would
    miss a secret cut in half or one with spaces, so the order is fixed
    here rather than left to each caller.

    Args:
        secrets: The secrets to hide; ``None`` and empty ones are skipped.
    """

    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[Secret | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                value = secret.reveal()
                forms |= {value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1]}
        # Longest first, so a secret that contains another is replaced whole.
        self._forms: tuple[str, ...] = tuple(sorted(forms, key=len, reverse=True))

    def quote(self, text: str, limit: int | None = None) -> str:
        """Return *text* with the secrets replaced, then scrubbed and cut to *limit*.

        Args:
            text: Text taken from a provider (or an error message).
            limit: The most characters kept; :func:`scrub`'s default when ``None``.

        Returns:
            One line that is safe to put in an error or a log.
        """
        for form in self._forms:
            text = text.replace(form, "[redacted]")
        return scrub(text) if limit is None else scrub(text, limit)

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"
