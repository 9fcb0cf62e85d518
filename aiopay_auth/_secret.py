"""A string that will not show itself by accident."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import html
import json
import re
from collections.abc import Iterable, Iterator
from typing import Final, final
from urllib.parse import quote, quote_plus, unquote, unquote_plus

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


WITHHELD = "[provider text withheld: it quoted a credential]"
"""What :meth:`Redactor.quote` returns for text that still decodes to a secret."""

# JavaScript's encodeURIComponent leaves these unescaped.
_URI_COMPONENT_SAFE = "-_.!~*'()"
_JSON_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|(["\\/bfnrt]))')
_JSON_SIMPLE = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_URLSAFE = str.maketrans("-_", "+/")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{4,}={0,2}")


def _encodings(value: str) -> set[str]:
    """The forms *value* travels in, or is echoed in, as plain text."""
    raw = value.encode()
    percent = {quote(value, safe=""), quote(value, safe=_URI_COMPONENT_SAFE), quote_plus(value)}
    forms = {value, *percent, *(form.lower() for form in percent)}
    for form in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        forms |= {form, form.replace("/", "\\/")}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {encoded, encoded.rstrip("=")}
    forms |= {html.escape(value), html.escape(value, quote=False)}  # an HTML error page
    return forms


def _json_unescaped(match: re.Match[str]) -> str:
    code, simple = match.groups()
    return chr(int(code, 16)) if code else _JSON_SIMPLE[simple]


def _decodings(text: str, shortest: int) -> Iterator[str]:
    """*text* decoded each way a secret may have been encoded in it.

    Base64 runs shorter than *shortest* characters (the encoding of the
    shortest secret) cannot hold one and are not decoded.
    """
    yield text
    yield unquote(text)  # percent-decoding is case-insensitive
    yield unquote_plus(text)
    yield _JSON_ESCAPE.sub(_json_unescaped, text)
    yield html.unescape(text)  # named, decimal and hex character references
    for run in _BASE64_RUN.findall(text):
        stripped = run.rstrip("=")
        if len(stripped) < shortest:
            continue
        # One alphabet: URL-safe base64 read as standard base64.
        stripped = stripped.translate(_URLSAFE)
        for start in range(4):  # the run may begin with letters that are not base64 of ours
            part = stripped[start:]
            with contextlib.suppress(binascii.Error, ValueError):
                yield base64.b64decode(part + "=" * (-len(part) % 4)).decode("utf-8", "replace")


@final
class Redactor:
    r"""Quotes provider-supplied text safely: the one place that does it.

    :meth:`quote` first replaces every given secret, in each form it
    travels in or may be echoed in (as is; form-encoded; percent-encoded in
    upper or lower case, also as JavaScript's ``encodeURIComponent`` does;
    JSON-escaped, also with ``\/`` and ``\uXXXX``; base64, standard and
    URL-safe, with or without padding; HTML-escaped). Then it checks what is
    left: decoded each of those ways (percent-decoding case-insensitively,
    ``+`` as a space, JSON unescaping, HTML character references, every
    base64-looking run), if a secret
    still shows, the whole text is replaced by :data:`WITHHELD`. Only then
    does it flatten, scrub and cut the text with
    :func:`~aiopay_auth.exceptions.scrub`. Redacting after the cut would
    miss a secret cut in half or one with spaces, so the order is fixed
    here rather than left to each caller.

    Args:
        secrets: The secrets to hide; ``None`` and empty ones are skipped.
    """

    __slots__ = ("_forms", "_shortest", "_values")

    def __init__(self, secrets: Iterable[Secret | None]) -> None:
        forms: set[str] = set()
        values: set[str] = set()
        for secret in secrets:
            if secret:
                value = secret.reveal()
                values |= {value, quote_plus(value)}  # Basic credentials are form-encoded
                forms |= _encodings(value)
        # Longest first, so a secret that contains another is replaced whole.
        self._forms: tuple[str, ...] = tuple(sorted(forms, key=len, reverse=True))
        self._values: frozenset[str] = frozenset(values)
        # Unpadded base64 of n bytes takes ceil(4n / 3) characters.
        self._shortest = min((-(-4 * len(v.encode()) // 3) for v in values), default=0)

    def quote(self, text: str, limit: int | None = None) -> str:
        """Return *text* with the secrets replaced, then scrubbed and cut to *limit*.

        Args:
            text: Text taken from a provider (or an error message).
            limit: The most characters kept; :func:`scrub`'s default when ``None``.

        Returns:
            One line that is safe to put in an error or a log:
            :data:`WITHHELD` when the text still decodes to a secret.
        """
        for form in self._forms:
            text = text.replace(form, "[redacted]")
        if self._still_quotes_a_secret(text):
            return WITHHELD
        return scrub(text) if limit is None else scrub(text, limit)

    def _still_quotes_a_secret(self, text: str) -> bool:
        if not self._values:
            return False
        decodings = _decodings(text, self._shortest)
        return any(value in decoded for decoded in decodings for value in self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"
