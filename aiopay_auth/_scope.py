"""Which URLs may carry a provider's token: the one scope rule, on yarl URLs, no HTTP client.

A provider's ``api`` is a tuple of scopes. Each is an origin (scheme,
host, port: yarl's ``port`` is the scheme's default when none is
written, so ``https://h`` and ``https://h:443`` are one origin) and a path
prefix: the URL's raw path with its trailing ``/`` dropped. A URL is in
a scope when its origin equals the scope's and its raw path equals the
prefix or lies below it at a segment boundary (``/api`` holds ``/api``
and ``/api/x``, not ``/apix``); an empty prefix holds every path of the
origin.

:meth:`Scope.holds` is the decision, and :meth:`Provider.in_scope
<aiopay_auth.Provider.in_scope>` and :class:`~aiopay_auth.BearerAuth`'s
table (:class:`ScopeTable`, an index by origin, most specific prefix
first) both make it there, so what the tests check is what a request
meets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from yarl import URL


__all__ = ["Origin", "Scope", "ScopeTable", "in_scope", "origin"]

Origin = tuple[str, str | None, int | None]
"""A URL's scheme, host and port."""

_Owner = TypeVar("_Owner")


def origin(url: URL) -> Origin:
    """The scheme, host and port of *url*: what must equal a scope's origin."""
    return (url.scheme, url.host, url.port)


class Scope:
    """One API URL as a scope: its origin and its path prefix.

    Args:
        url: An API URL (absolute, no query or fragment: the provider
            profile checks that).
    """

    __slots__ = ("_below", "origin", "prefix")

    def __init__(self, url: URL) -> None:
        self.origin: Origin = origin(url)
        self.prefix: str = url.raw_path.rstrip("/")
        self._below = self.prefix + "/"

    def holds_path(self, path: str) -> bool:
        """Whether the raw *path* is the prefix or below it at a segment boundary."""
        return not self.prefix or path == self.prefix or path.startswith(self._below)

    def holds(self, url: URL) -> bool:
        """Whether a request to *url* is in this scope."""
        return origin(url) == self.origin and self.holds_path(url.raw_path)

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"<Scope {scheme}://{host}:{port}{self.prefix}>"


def in_scope(api: Iterable[URL], url: URL) -> bool:
    """Whether *url* is in one of the scopes *api* names."""
    return any(Scope(scope).holds(url) for scope in api)


class ScopeTable(Generic[_Owner]):
    """Scopes and their owners, indexed by origin: which owner a URL belongs to.

    A URL belongs to the owner of the most specific (longest prefix) scope
    that :meth:`Scope.holds` it. Built once, read on every request: one
    dictionary lookup by origin, then the origin's scopes in order.
    """

    __slots__ = ("_by_origin",)

    def __init__(self) -> None:
        self._by_origin: dict[Origin, list[tuple[Scope, _Owner]]] = {}

    def claim(self, url: URL, owner: _Owner) -> _Owner | None:
        """Give the scope *url* to *owner*.

        Returns:
            ``None``; or, when that very scope (same origin and prefix)
            already has an owner, that owner, and the table is unchanged.
        """
        scope = Scope(url)
        entries = self._by_origin.setdefault(scope.origin, [])
        for other, other_owner in entries:
            if other.prefix == scope.prefix:
                return other_owner
        entries.append((scope, owner))
        entries.sort(key=lambda entry: len(entry[0].prefix), reverse=True)  # stable
        return None

    def find(self, url: URL) -> _Owner | None:
        """The owner of the most specific scope that holds *url*, if any."""
        entries = self._by_origin.get(origin(url))
        if entries is None:
            return None
        path = url.raw_path
        for scope, owner in entries:
            if scope.holds_path(path):
                return owner
        return None
