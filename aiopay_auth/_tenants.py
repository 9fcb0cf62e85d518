"""Tenants: many credentials for one provider API, each request choosing its own."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs
from yarl import URL

from ._check import instance_of
from ._health import Health
from ._holder import TokenHolder
from ._limit import FetchLimit
from ._log import log
from ._middleware import BearerAuth
from ._network import Network
from ._pool import FairPool
from ._provider import Provider
from ._schedule import Schedule, Slot
from ._secret import Secret
from ._source import TokenSource
from ._status import classify_status
from ._tenant_holder import TenantHolder
from ._token import Token
from .exceptions import (
    ConfigError,
    TenantRemovedError,
    TenantRequiredError,
    TokenResponseError,
)


if TYPE_CHECKING:
    from aiohttp import ClientMiddlewareType, ClientRequest

    from ._manager import TokenManager


__all__ = ["Tenant", "TenantSource", "Tenants"]


class Tenant:
    """One credential of a :class:`Tenants` set: a merchant, a storefront.

    Choose it per request with aiohttp's own per-request middlewares::

        async with http.post(url, json=order, middlewares=merchant.middlewares) as resp:
            ...

    Attributes:
        key: The tenant's key in its set (a merchant id; shown in logs).
        holder: Its token holder (named ``"<set name>/<key>"``): read
            ``holder.health()``, or ``await holder.get()`` to wait for its
            first token.
        middlewares: What to pass as ``middlewares=`` on a request for this
            tenant: a :class:`~aiopay_auth.FairPool` (admission to the
            session's pool, shared with every other request on it) around
            a :class:`~aiopay_auth.BearerAuth` that stamps this tenant's
            token on the set's API only, with the same redirect checks and
            401 recovery as any provider. They replace the session's own
            middlewares for that request, so they stamp no other
            provider's token.
    """

    __slots__ = ("_slot", "holder", "key", "middlewares")

    def __init__(self, key: str, slot: Slot) -> None:
        self.key = key
        self.holder: TokenHolder = slot.holder
        self.middlewares: tuple[ClientMiddlewareType, ...] = (FairPool(_TenantAuth(slot.holder)),)
        self._slot = slot

    def __repr__(self) -> str:
        return f"<Tenant {self.key!r} {self.holder.state}>"


class _TenantAuth(BearerAuth):
    """One tenant's :class:`BearerAuth`: it also notes each request, so an idle tenant is told."""

    __slots__ = ("_tenant_holder",)

    def __init__(self, holder: TenantHolder) -> None:
        super().__init__(holder)
        self._tenant_holder = holder

    def _hop(self, request: ClientRequest) -> TokenHolder | None:
        """Note the request, then decide its hop as :class:`BearerAuth` does.

        Every path runs this: :meth:`BearerAuth.__call__`, and
        :class:`~aiopay_auth.FairPool`, which runs that body inline.
        """
        self._tenant_holder.note_request()
        return super()._hop(request)


class TenantSource:
    """A tenant's token requests: its current credentials, within its set's :class:`FetchLimit`.

    Each request is built, once its turn comes, from the holder's provider
    profile of that moment, so a rotated secret is used from the next
    request on.

    Args:
        holder: The tenant's holder (its provider is read at each fetch).
        http: Builds the source that asks the provider for a profile.
        limit: The set's bound on token requests.
    """

    __slots__ = ("_holder", "_http", "_limit")

    def __init__(
        self,
        holder: TokenHolder,
        http: Callable[[Provider], TokenSource],
        limit: FetchLimit,
    ) -> None:
        self._holder = holder
        self._http = http
        self._limit = limit

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Wait for a turn under the limit, then ask the provider; a 429 pauses the set."""
        limit = self._limit
        try:
            async with limit.turn():
                profile = self._holder.provider
                token = await self._http(profile).fetch(refresh_token)
        except TokenResponseError as err:
            if classify_status(err.status) != "throttled":
                limit.answered()
                raise
            pause = limit.throttled(self._holder.policy, err.retry_after)
            emit = log.warning if limit.throttles == 1 else log.debug  # once per streak
            emit(
                "aiopay_auth.tenants_throttled",
                provider=self._holder.name,
                pause=round(pause, 3),
                retry_after=err.retry_after,
            )
            raise
        limit.answered()
        return token


class Tenants:
    """Many credentials (tenants) for one provider API, sharing one pool and one limit.

    A payment platform holds one credential per merchant for the same API.
    Get a set from :meth:`TokenManager.add_tenants
    <aiopay_auth.TokenManager.add_tenants>`, add a tenant per credential
    (at start-up or while serving), and pass the set to
    :meth:`TokenManager.session <aiopay_auth.TokenManager.session>`: one
    pooled, fair session serves all of them. Each request chooses its
    tenant with ``middlewares=tenant.middlewares``; a request to the API
    that chose none raises
    :class:`~aiopay_auth.exceptions.TenantRequiredError` and is not sent,
    never stamped with another merchant's token.

    Every tenant has its own holder (the same freshness, origin checks
    and 401 recovery as a provider added with :meth:`TokenManager.add
    <aiopay_auth.TokenManager.add>`). One task refreshes them all, from a
    heap of their refresh points, and all their token requests share one
    :class:`FetchLimit`: at most :attr:`limit` ``.concurrent`` in flight
    and ``.per_second`` started per second. A tenant that a request is
    waiting for, or whose token a 401 refused, goes ahead of queued
    background refreshes and first tokens.

    A tenant with no request for :attr:`idle_after` seconds rests: at its
    next refresh point its token is dropped and refreshing stops
    (``health()`` shows it ``"idle"``). Its next request waits for one
    token request, shared by all its waiters, and refreshing resumes.

    Attributes:
        name: The set's name; tenants' holders are named ``"<name>/<key>"``.
        api: The URLs of the API the tenants share.
        limit: The bound on the set's token requests.
        network: The tenants' own way to the token endpoint, if not the
            manager's.
        idle_after: Seconds without a request after which a tenant rests
            (``None``: never).
    """

    __slots__ = (
        "_http",
        "_manager",
        "_rng",
        "_schedule",
        "_tenants",
        "api",
        "idle_after",
        "limit",
        "name",
        "network",
    )

    def __init__(
        self,
        manager: TokenManager,
        name: str,
        api: tuple[URL, ...],
        limit: FetchLimit,
        *,
        network: Network | None = None,
        rng: random.Random | None = None,
        idle_after: float | None = None,
    ) -> None:
        self._manager = manager
        self._rng = rng or random.Random()  # noqa: S311 - the tenants' jitter
        self.name = name
        self.api = api
        self.limit = limit
        self.network = network
        self.idle_after = idle_after
        self._http: Callable[[Provider], TokenSource] | None = None  # set by the manager
        self._schedule = Schedule(name, limit, idle_after=idle_after)
        self._tenants: dict[str, Tenant] = {}

    def add(self, key: str, provider: Provider) -> Tenant:
        """Start keeping the token of tenant *key*, whose credentials are in *provider*.

        Returns at once; the first token is fetched in the background
        within the set's limit. The profile is the one users build anyway
        (``cm.provider(client_id=..., client_secret=...)``); its ``api``
        must be the set's.

        Args:
            key: The tenant's key (a merchant id); unique in the set.
            provider: The tenant's profile: its credentials.

        Returns:
            The tenant: pass ``tenant.middlewares`` on its requests.

        Raises:
            ConfigError: The manager is not open, *key* is empty or taken,
                *provider* covers another API, or its plain-HTTP token URL
                would go through a proxy not on loopback.
        """
        profile = self._profile(key, provider)
        if key in self._tenants:
            msg = f"tenants {self.name!r} already have a tenant {key!r}"
            raise ConfigError(msg, provider=self.name)
        writer, step = self._manager._tenant_step(profile, self)
        slot = Slot(writer, step)
        tenant = self._tenants[key] = Tenant(key, slot)
        self._schedule.add(slot)
        log.debug("aiopay_auth.tenant_added", provider=self.name, tenant=key)
        return tenant

    async def remove(self, key: str) -> None:
        """Stop tenant *key*: it is refreshed no more, its token is dropped, its waiters fail.

        Every request waiting for its token, and every later one through
        its middlewares, gets
        :class:`~aiopay_auth.exceptions.TenantRemovedError` at once.
        Returns once its token request in flight, if any, has stopped;
        nothing of it is kept.

        Raises:
            ConfigError: The set has no tenant *key*.
        """
        tenant = self[key]
        del self._tenants[key]
        tenant._slot.writer.close(
            TenantRemovedError(f"tenant {key!r} was removed", provider=tenant.holder.name)
        )
        await self._schedule.remove(tenant._slot)  # cancelling this wait leaves it ending anyway
        log.info("aiopay_auth.tenant_removed", provider=self.name, tenant=key)

    async def rotate(self, key: str, provider: Provider) -> Token:
        """Give tenant *key* new credentials (a rotated secret) without dropping a request.

        Its current token is still served meanwhile; a token request with
        the new credentials starts at once (within the set's limit), and
        every later one uses them too. Returns once a token fetched with
        them is published: from then on the old secret is not used, and
        may be revoked at the provider.

        Returns:
            The first token fetched with the new credentials.

        Raises:
            ConfigError: The set has no tenant *key*, or *provider* covers
                another API.
            TokenUnavailableError: No token came with the new credentials
                within the policy's ``wait_timeout``, or they were refused
                with an error that cannot heal (``invalid_client``): its
                ``last_error`` says which. The new credentials stay in use.
                :class:`~aiopay_auth.exceptions.TenantRemovedError` at once
                when the tenant is removed meanwhile.
        """
        tenant = self[key]
        profile = self._profile(key, provider)
        writer = tenant._slot.writer
        writer.rotate(profile)
        log.info("aiopay_auth.tenant_rotated", provider=self.name, tenant=key)
        return await writer.rotated(tenant._slot.step)

    def __getitem__(self, key: str) -> Tenant:
        """The tenant *key*; :class:`~aiopay_auth.ConfigError` if there is none."""
        tenant = self._tenants.get(key)
        if tenant is None:
            msg = f"tenants {self.name!r} have no tenant {key!r}"
            raise ConfigError(msg, provider=self.name)
        return tenant

    def __contains__(self, key: object) -> bool:
        return key in self._tenants

    def __len__(self) -> int:
        return len(self._tenants)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._tenants))

    def health(self) -> dict[str, Health]:
        """Each tenant's health snapshot, by key; no I/O, no await.

        A resting tenant (no request for :attr:`idle_after`) is ``"idle"``.
        """
        return {key: tenant.holder.health() for key, tenant in self._tenants.items()}

    def no_tenant(self, url: URL) -> TenantRequiredError:
        """The error for a request to *url* that chose no tenant."""
        shown = url.with_query(None).with_fragment(None)
        msg = (
            f"a request to {shown} chose no tenant, and the API is shared by tenants: "
            "choose one per request with middlewares=tenant.middlewares"
        )
        return TenantRequiredError(msg, provider=self.name)

    def _profile(self, key: str, provider: Provider) -> Provider:
        """*provider* checked against the set, named ``"<name>/<key>"``."""
        instance_of("tenant key", key, str)
        instance_of(f"tenant {key!r} provider", provider, Provider)
        if not key:
            msg = "a tenant key must not be empty"
            raise ConfigError(msg, provider=self.name)
        if set(provider.api) != set(self.api):
            msg = (
                f"tenant {key!r}: the provider's api {[str(u) for u in provider.api]} "
                f"is not the API of tenants {self.name!r} {[str(u) for u in self.api]}"
            )
            raise ConfigError(msg, provider=self.name)
        return attrs.evolve(provider, name=f"{self.name}/{key}")

    def _close(self) -> None:
        """Fail every tenant's waiters: the manager is closing."""
        for tenant in self._tenants.values():
            tenant._slot.writer.close()

    def __repr__(self) -> str:
        return f"<Tenants {self.name!r} tenants={len(self)}>"
