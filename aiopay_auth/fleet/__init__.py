"""One token per credential across a fleet of processes, through Redis.

Install with ``pip install 'aiopay-auth[redis]'``. Then hand the fleet to
the manager in every worker process::

    import redis.asyncio
    from aiopay_auth import TokenManager
    from aiopay_auth.fleet import RedisFleet

    fleet = RedisFleet(redis.asyncio.Redis(host="127.0.0.1"), encryption_key=KEY)
    async with TokenManager(token_source=fleet.wrap) as tokens:
        ...

The client may be a ``redis.asyncio.Redis`` (a single server, or a
Sentinel's ``master_for(...)``) or a ``redis.asyncio.cluster.RedisCluster``.

How it works: each process keeps its own refresher and lock-free holder,
so the request hot path never touches Redis. When a refresher needs a new
token, it first looks in Redis for a token newer than the one it holds.
If there is none, it takes a lease (``SET NX PX`` with a random fencing
value); only the lease holder asks the provider, stores the token with a
TTL equal to its remaining life, announces it on a pub/sub channel and
releases the lease (compare-and-delete). The others hold one subscription
for the whole wait, and look in Redis once per ``poll_interval`` as a
fallback. A refresh token is always read from Redis right before it is
used and the new one is written back only while the lease is still held,
so a rotated refresh token is never spent twice.

Every key of one credential carries the same hash tag,
``{prefix}:{<fleet_key>}:…``, so a Redis Cluster keeps them in one slot
and the Lua scripts may touch them all.

A stored entry is believed only if a provider's answer with the same
content would be (token text, lifetime rule, one-day cap) and its
wall-clock times are plausible on this host; otherwise it is absent, and
the next lease holder overwrites it.

When Redis is down, slow, or answers anything the fleet does not
understand, each process fetches for itself: degraded, but never blocked.
It logs the change once and rejoins when Redis answers again. A lease it
may still hold (its store or release failed, or the answer to taking it
was lost) is settled right after its own fetch, or else at its next
contact: the token fetched under it is stored if the lease is still its
own, and the lease released. After a rotation of a tenant's credentials
no stored token is taken until this process's own request with them
succeeds. Keys are
derived from the provider profile and client identity, never from a
secret. Stored tokens are encrypted and authenticated with an
``encryption_key`` (a Fernet key). Without one (``unencrypted=True``, an
explicit choice), anyone who can read the keys reads the tokens, and
anyone who can write them can make the fleet use a token of their choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from .._holder import TokenHolder
from .._log import log
from .._provider import Provider
from .._secret import Secret
from .._source import TokenSource
from .._token import Token
from ..exceptions import ConfigError
from ._entry import Entry, EntryRefused, entry_from_json, entry_to_json
from ._wait import Announcements, publish_command


if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster


__all__ = ["FleetState", "RedisFleet", "SharedTokenSource", "fleet_key"]

FleetState = Literal["shared", "local"]
"""Where tokens come from, ``shared`` through Redis, or ``local`` when Redis failed."""

_STORE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  -- SPUBLISH on a cluster of Redis 7+; a server without it gets PUBLISH.
  if not pcall(redis.call, ARGV[5], KEYS[3], ARGV[4]) then
    redis.call('PUBLISH', KEYS[3], ARGV[4])
  end
  return 1
end
return 0
"""
# A lease with no expiry was never set by a fleet member (each sets its
# lease with PX) and would stall every refresh: it is deleted.
_UNPLANT = """
if redis.call('PTTL', KEYS[1]) == -1 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def fleet_key(provider: Provider) -> str:
    """The Redis key part that names one credential, shared by the whole fleet.

    A hash of everything that tells one credential's token requests from
    another's: the token URL, client id, username, scope, grant, the
    configured refresh token, and the extra fields and headers. Two
    processes with the same credential share tokens; two merchants that
    share a platform's client id and differ only by their refresh token,
    a field or a header never do. Secret values enter only as their own
    SHA-256 digests, so nothing secret can be read from the key; the
    client secret and password do not enter at all (a rotated secret is
    the same credential). In the keys it is wrapped in a hash tag
    (``{…}``).
    """
    identity = "\n".join(
        [
            str(provider.token_url),
            provider.client_id,
            provider.username or "",
            provider.scope or "",
            provider.grant_type,
            _digest(provider.refresh_token),
            ",".join(sorted(f"{k}={_digest(v)}" for k, v in provider.extra_fields)),
            ",".join(sorted(f"{k.lower()}={_digest(v)}" for k, v in provider.extra_headers)),
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _digest(value: str | Secret | None) -> str:
    """*value* as it enters a fleet key: a secret only as its SHA-256 digest."""
    if value is None:
        return ""
    if isinstance(value, Secret):
        return "sha256:" + hashlib.sha256(value.reveal().encode()).hexdigest()
    return value


class RedisFleet:
    """Shares tokens between the processes of a fleet; plug :meth:`wrap` into the manager.

    Args:
        redis: A ``redis.asyncio.Redis`` client (``decode_responses`` off),
            a Sentinel's ``master_for(...)`` client, or a
            ``redis.asyncio.cluster.RedisCluster``.
        prefix: Prefix of every key this fleet uses (no ``{`` or ``}``).
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``)
            that encrypts and authenticates stored tokens; needs the
            ``cryptography`` package.
        unencrypted: Must be ``True`` to run without an ``encryption_key``:
            then whoever can read the Redis keys can read the tokens, and
            whoever can write them can substitute tokens.
        lease_ttl: Seconds a refresh lease lasts; longer than a token request
            may take (the manager's ``fetch_timeout``).
        redis_timeout: Bound on each Redis operation, in seconds; past it the
            process fetches for itself. While a token is served, each
            operation is also bounded by half of that token's remaining life,
            so the fetch that follows a Redis that answers nothing still
            comes before the token expires.
        poll_interval: How long a process waiting for another's refresh
            sleeps between two looks in Redis, in seconds (an announcement
            wakes it sooner).
        clock_tolerance: How far in this host's future a stored token's issue
            time may lie (clock skew between hosts), in seconds; an entry
            beyond it is treated as absent.
        wall_clock: This host's wall clock (``time.time``); injectable for tests.

    Raises:
        ConfigError: A bad key, a non-positive bound, braces in the prefix,
            or neither ``encryption_key`` nor ``unencrypted=True``.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str = "aiopay_auth",
        encryption_key: bytes | str | None = None,
        unencrypted: bool = False,
        lease_ttl: float = 15.0,
        redis_timeout: float = 0.5,
        poll_interval: float = 0.05,
        clock_tolerance: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_ttl <= 0 or redis_timeout <= 0 or poll_interval <= 0:
            msg = "lease_ttl, redis_timeout and poll_interval must be positive"
            raise ConfigError(msg)
        if clock_tolerance < 0:
            msg = "clock_tolerance must not be negative"
            raise ConfigError(msg)
        if "{" in prefix or "}" in prefix:
            msg = "prefix must not hold '{' or '}' (the keys' hash tag is the fleet key)"
            raise ConfigError(msg)
        if encryption_key is None and not unencrypted:
            msg = (
                "RedisFleet needs an encryption_key (a Fernet key); to store tokens in "
                "plain text, which lets anyone with Redis write access substitute "
                "tokens, pass unencrypted=True"
            )
            raise ConfigError(msg)
        if encryption_key is not None and unencrypted:
            msg = "give either an encryption_key or unencrypted=True, not both"
            raise ConfigError(msg)
        self.redis = redis
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.redis_timeout = redis_timeout
        self.poll_interval = poll_interval
        self.clock_tolerance = clock_tolerance
        self.wall_clock = wall_clock
        self._publish = publish_command(redis)
        self._encrypt, self._decrypt = _codec(encryption_key)

    def wrap(self, holder: TokenHolder, inner: TokenSource) -> SharedTokenSource:
        """The ``token_source`` seam of :class:`~aiopay_auth.TokenManager`."""
        return SharedTokenSource(self, holder, inner)

    def keys(self, provider: Provider) -> tuple[str, str, str]:
        """The token key, lease key and channel of *provider*'s credential (one slot)."""
        base = f"{self.prefix}:{{{fleet_key(provider)}}}"
        return f"{base}:token", f"{base}:lease", f"{base}:events"

    def encode(self, entry: Entry) -> bytes:
        """Serialize (and encrypt, with a key) one stored token."""
        return self._encrypt(entry_to_json(entry))

    def decode(self, raw: bytes) -> Entry | None:
        """Read one stored token; ``None`` if it is not to be believed.

        That is: it does not decrypt with this key, is not the format, fails
        the checks a provider's answer must pass, or its times are implausible
        on this host's clock (see ``clock_tolerance``).
        """
        try:
            return self.read(raw)
        except EntryRefused:
            return None

    def read(self, raw: bytes) -> Entry:
        """Like :meth:`decode`, but raises ``ValueError`` saying why an entry is refused."""
        try:
            plain = self._decrypt(raw)
        except ValueError as exc:
            raise EntryRefused(str(exc)) from None
        return entry_from_json(plain, wall=self.wall_clock(), tolerance=self.clock_tolerance)


def _codec(key: bytes | str | None) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    if key is None:
        return (lambda raw: raw), (lambda raw: raw)
    try:
        from cryptography.fernet import Fernet, InvalidToken  # noqa: PLC0415 - optional
    except ImportError as exc:  # pragma: no cover - the redis extra installs it
        msg = "encryption_key needs the cryptography package: pip install 'aiopay-auth[redis]'"
        raise ConfigError(msg) from exc
    try:
        fernet = Fernet(key)
    except (ValueError, TypeError):
        msg = "encryption_key must be a Fernet key (Fernet.generate_key())"
        raise ConfigError(msg) from None  # never chain anything that shows the key

    def decrypt(raw: bytes) -> bytes:
        try:
            return fernet.decrypt(raw)
        except InvalidToken:
            msg = "stored token does not decrypt with this key"
            raise ValueError(msg) from None

    return fernet.encrypt, decrypt


class SharedTokenSource:
    """A :class:`~aiopay_auth.TokenSource` that shares tokens through Redis.

    Made by :meth:`RedisFleet.wrap`; see :mod:`aiopay_auth.fleet`.

    Attributes:
        state: ``"shared"`` or ``"local"`` (Redis failed; fetching alone).
        http_fetches: Token requests this process sent to the provider.
        shared_hits: Tokens this process took from Redis instead.
        refused_entries: Stored entries read and not believed (see
            :meth:`RedisFleet.decode`), and leases found with no expiry
            (never set by a member) and deleted.
    """

    def __init__(self, fleet: RedisFleet, holder: TokenHolder, inner: TokenSource) -> None:
        self._fleet = fleet
        self._holder = holder
        self._inner = inner
        self._provider = holder.provider
        self._key, self._lease, self._channel = fleet.keys(holder.provider)
        self._fetched: Token | None = None  # fetched under the lease, not yet returned
        self._guarded = True  # whether the served token's life bounds Redis waits now
        self._unsettled: _Unsettled | None = None  # a lease we may still hold
        self._own_only = False  # credentials rotated: only our own request will do
        self.state: FleetState = "shared"
        self.http_fetches = 0
        self.shared_hits = 0
        self.refused_entries = 0

    @property
    def store(self) -> FleetState:
        """:attr:`state`, as ``health().store`` reads it (see ``TokenManager(token_source=)``)."""
        return self.state

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Return a token newer than the holder's, from Redis or from the provider."""
        stale = self._holder.latest
        self._fetched, self._guarded = None, True
        try:
            await self._settle()
            self._follow_credentials()
            token = await self._shared_fetch(refresh_token, stale)
        except _RedisDown as down:
            self._set_state("local", reason=down.reason)
            if down.token is None:
                self.http_fetches += 1
                # With the primary grant: a refresh token is spent only under
                # the lease, and another process may be spending this one now.
                token = await self._inner.fetch(None)
            else:
                # Fetched under the lease, only not stored: its refresh token
                # was spent, so never ask again with it.
                token = down.token
            # A blip (a lost answer, a stale connection) may be over by now:
            # settle at once, so the others need not wait for our next refresh.
            with contextlib.suppress(_RedisDown):
                await self._settle()
        else:
            self._set_state("shared")
        self._own_only = False
        return token

    def _bound(self) -> float:
        """How long the next Redis operation may take, in seconds.

        ``redis_timeout``, and no more than half of what is left of the
        token this process serves (the other half is left for fetching
        alone, or for publishing what was fetched), or, with none served,
        of the token it fetched under the lease. Only ``redis_timeout``
        applies with neither (a cold start, an invalidation, a token that
        ran out), and while waiting on another process that is spending
        the refresh token this one would spend.
        """
        bound = self._fleet.redis_timeout
        left = self._left()
        if left is not None:
            bound = min(bound, left / 2)
            if bound <= 0:
                raise _RedisDown("the served token expired during the refresh")
        return bound

    def _left(self) -> float | None:
        """Seconds left of the token that bounds Redis waits now, if one does."""
        if not self._guarded:
            return None
        token = self._holder.usable() or self._fetched
        return None if token is None else token.remaining(self._holder.clock())

    def _follow_credentials(self) -> None:
        """Use the holder's credentials now (a tenant's rotation).

        Their key set, which a rotation that changes more than the secret
        changes; and until one of our requests with them succeeds, no
        stored token: an entry does not say which secret fetched it.
        """
        provider = self._holder.provider
        if provider is not self._provider:
            self._provider = provider
            self._key, self._lease, self._channel = self._fleet.keys(provider)
            self._own_only = True

    def _leave(self, fence: str, token: Token | None, refresh_token: Secret | None) -> None:
        """Remember a lease we may still hold, to settle at our next contact."""
        self._unsettled = _Unsettled(
            keys=(self._key, self._lease, self._channel),
            fence=fence,
            token=token,
            refresh_token=refresh_token,
        )

    async def _settle(self) -> None:
        """Store the token fetched under a lease we may still hold, and release it.

        The lease is ours when Redis failed between taking it and
        releasing it. Until settled it keeps every process, this one too,
        from refreshing through Redis, and the stored entry may carry the
        refresh token its token request spent. Both scripts check the
        fence, so a lease that expired and was taken by another process
        is left alone; while it is ours nobody has stored since, so the
        token fetched under it is the newest of its key set. Only that
        token, under that key set: never one fetched later, perhaps with
        other credentials.
        """
        unsettled = self._unsettled
        if unsettled is None:
            return
        _, lease, _ = unsettled.keys
        if unsettled.token is not None:
            await self._store(
                unsettled.token,
                unsettled.fence,
                refresh_token=unsettled.refresh_token,
                keys=unsettled.keys,
            )
        await self._redis(self._fleet.redis.eval, _RELEASE, 1, lease, unsettled.fence)
        self._unsettled = None

    async def _shared_fetch(self, refresh_token: Secret | None, stale: Token | None) -> Token:
        token = await self._look_or_lead(refresh_token, stale)
        if token is not None:
            return token
        return await self._wait_for_holder(refresh_token, stale)

    async def _look_or_lead(
        self, refresh_token: Secret | None, stale: Token | None
    ) -> Token | None:
        """A stored token newer than *stale*, else our own fetch under the lease.

        ``None`` when neither: another process holds the lease.
        """
        shared = self._newer_than(await self._load(), stale)
        if shared is not None:
            self.shared_hits += 1
            return shared
        fence = await self._take_lease()
        if fence is None:
            return None
        return await self._refresh_under_lease(fence, refresh_token, stale)

    async def _wait_for_holder(self, refresh_token: Secret | None, stale: Token | None) -> Token:
        """Another process holds the lease: wait on one subscription, polling between."""
        fleet = self._fleet
        # Another process is asking the provider for all: waiting on it is
        # not Redis trouble, and asking alone would be no sooner. A Redis
        # that stops answering meanwhile is: each look is bounded as before,
        # unless this process would spend a refresh token, which another
        # process is spending right now; then only by redis_timeout.
        self._guarded = refresh_token is None
        deadline = time.monotonic() + 2 * fleet.lease_ttl
        if await self._redis(fleet.redis.eval, _UNPLANT, 1, self._lease):
            self.refused_entries += 1
            log.warning("aiopay_auth.fleet_lease_refused", provider=self._holder.name)
        async with Announcements.open(
            fleet.redis, self._channel, timeout=self._bound()
        ) as subscription:
            announcements = subscription
            while (left := deadline - time.monotonic()) > 0:
                # An announcement cuts the first pause short; after that the
                # looks keep to poll_interval, whoever publishes on the channel.
                interval = min(fleet.poll_interval, left)
                if await self._pause(announcements, interval):
                    announcements = None
                token = await self._look_or_lead(refresh_token, stale)
                if token is not None:
                    return token
        # The lease holder neither finished nor released in time: fetch alone.
        raise _RedisDown("no token from the lease holder in time")

    async def _pause(self, announcements: Announcements | None, interval: float) -> bool:
        """Sleep *interval*, cut short by an announcement; whether one came."""
        if announcements is not None:
            # A broken subscription: sleep; the GET that follows tells.
            with contextlib.suppress(Exception):
                return await announcements.wait(interval)
        await anyio.sleep(interval)
        return False

    async def _take_lease(self) -> str | None:
        fence = secrets.token_hex(16)
        fleet = self._fleet
        try:
            taken = await self._redis(
                fleet.redis.set, self._lease, fence, nx=True, px=_ms(fleet.lease_ttl)
            )
        except _RedisDown:
            self._leave(fence, None, None)  # Redis may have set it and lost the answer
            raise
        return fence if taken else None

    async def _refresh_under_lease(
        self, fence: str, refresh_token: Secret | None, stale: Token | None
    ) -> Token:
        fleet = self._fleet
        redis_down = False
        keep: Secret | None = None
        try:
            stored = await self._load()
            shared = self._newer_than(stored, stale)  # someone finished just before us
            if shared is not None:
                self.shared_hits += 1
                return shared
            if (
                refresh_token is not None
                and stored is not None
                and stored.refresh_token
                and (stale is None or stale.access_token == stored.access_token)
            ):
                # The fleet's newest refresh token, never one another process
                # spent; unless this process holds a newer token than the
                # stored one (fetched while Redis failed): then its own.
                refresh_token = Secret(stored.refresh_token)
            self.http_fetches += 1
            token = await self._inner.fetch(refresh_token)
            self._fetched = token
            keep = token.refresh_token or refresh_token
            try:
                await self._store(token, fence, refresh_token=keep)
            except _RedisDown as down:
                down.token = token
                raise
            return token
        except _RedisDown:
            redis_down = True
            raise
        finally:
            # Asking a Redis that just failed would only delay us: the lease
            # is settled at our next contact (see _settle).
            if redis_down:
                self._leave(fence, self._fetched, keep)
            else:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._redis(fleet.redis.eval, _RELEASE, 1, self._lease, fence)
                    except _RedisDown:
                        self._leave(fence, None, None)  # stored; only the release failed

    async def _store(
        self,
        token: Token,
        fence: str,
        *,
        refresh_token: Secret | None,
        keys: tuple[str, str, str] | None = None,
    ) -> None:
        """Store and announce *token*, if the lease *fence* is still ours.

        Under this credential's key set, or the given *keys*.
        """
        fleet = self._fleet
        key, lease, channel = keys or (self._key, self._lease, self._channel)
        wall = fleet.wall_clock()
        entry = Entry.of(
            token,
            clock=self._holder.clock(),
            wall=wall,
            refresh_token=refresh_token.reveal() if refresh_token else None,
        )
        ttl = _ms(entry.expires_wall - wall)
        if ttl > 0:
            await self._redis(
                fleet.redis.eval,
                _STORE,
                3,
                key,
                lease,
                channel,
                fence,
                fleet.encode(entry),
                ttl,
                "published",
                fleet._publish,
            )

    def _newer_than(self, entry: Entry | None, stale: Token | None) -> Token | None:
        """The stored token as this process's token, if it is newer than *stale*."""
        if entry is None or self._own_only:
            return None
        if stale is not None and entry.access_token == stale.access_token:
            return None
        token = entry.to_token(clock=self._holder.clock(), wall=self._fleet.wall_clock())
        if stale is not None and token.issued_at <= stale.issued_at:
            return None
        return token

    async def _load(self) -> Entry | None:
        raw = await self._redis(self._fleet.redis.get, self._key)
        if raw is None:
            return None
        try:
            return self._fleet.read(raw)
        except EntryRefused as refused:
            self.refused_entries += 1
            emit = log.warning if self.refused_entries == 1 else log.debug
            emit("aiopay_auth.fleet_entry_refused", provider=self._holder.name, reason=str(refused))
            return None

    async def _redis(
        self, command: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one Redis command, within its bound; any failure of it means Redis trouble."""
        bound = self._bound()
        try:
            with anyio.fail_after(bound):
                return await command(*args, **kwargs)
        except TimeoutError:
            raise _RedisDown("redis timed out") from None
        except Exception as exc:  # whatever Redis says that we do not know
            raise _RedisDown(f"redis failed ({type(exc).__name__})") from None

    def _set_state(self, state: FleetState, *, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        name = self._holder.name
        if state == "local":
            log.warning("aiopay_auth.fleet_degraded", provider=name, reason=reason)
        else:
            log.info("aiopay_auth.fleet_rejoined", provider=name)


@attrs.frozen
class _Unsettled:
    """A lease we may still hold: its key set, its fence, what was fetched under it."""

    keys: tuple[str, str, str]
    fence: str
    token: Token | None
    refresh_token: Secret | None = attrs.field(repr=False)


class _RedisDown(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token: Token | None = None  # a token fetched before Redis failed


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))
