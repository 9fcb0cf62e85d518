"""One token per credential across a fleet of processes, through Redis.

Install with ``pip install 'aiopay-auth[redis]'``. Then hand the fleet to
the manager in every worker process::

    import redis.asyncio
    from aiopay_auth import TokenManager
    from aiopay_auth.fleet import RedisFleet

    fleet = RedisFleet(redis.asyncio.Redis(host="127.0.0.1"), encryption_key=KEY)
    async with TokenManager(token_source=fleet.wrap) as tokens:
        ...

How it works: each process keeps its own refresher and lock-free holder,
so the request hot path never touches Redis. When a refresher needs a new
token, it first looks in Redis for a token newer than the one it holds.
If there is none, it takes a lease (``SET NX PX`` with a random fencing
value); only the lease holder asks the provider, stores the token with a
TTL equal to its remaining life, announces it on a pub/sub channel and
releases the lease (compare-and-delete). The others wait for that
announcement (polling as a fallback) and pick the new token up. A refresh
token is always read from Redis right before it is used and the new one is
written back only while the lease is still held, so a rotated refresh
token is never spent twice.

When Redis is down or slow, each process fetches for itself: degraded, but
never blocked. It logs the change once and rejoins when Redis answers again.
Keys are derived from the provider profile and client identity, never from a
secret. Stored tokens are encrypted when an ``encryption_key`` (a Fernet key)
is given; without one, anyone who can read the Redis keys can read the tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from ._fetch import TokenSource
from ._holder import TokenHolder
from ._log import log
from ._provider import Provider
from ._secret import Secret
from ._token import Token
from .exceptions import ConfigError


if TYPE_CHECKING:
    from redis.asyncio import Redis


__all__ = ["FleetState", "RedisFleet", "SharedTokenSource", "fleet_key"]

FleetState = Literal["shared", "local"]
"""Where tokens come from, ``shared`` through Redis, or ``local`` when Redis failed."""

_STORE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('PUBLISH', KEYS[3], ARGV[4])
  return 1
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

    A hash of the token URL, client id, username, scope and grant: two
    processes with the same credential share tokens; nothing secret goes
    into the key.
    """
    identity = "\n".join(
        [
            str(provider.token_url),
            provider.client_id,
            provider.username or "",
            provider.scope or "",
            provider.grant_type,
            ",".join(sorted(f"{k}={v}" for k, v in provider.extra_fields)),
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


@attrs.frozen
class _Entry:
    """A token as stored in Redis: wall-clock times, so any host can read it."""

    access_token: str = attrs.field(repr=False)
    token_type: str
    issued_wall: float
    expires_wall: float
    refresh_token: str | None = attrs.field(repr=False)
    scope: str | None

    def to_token(self, *, clock: float, wall: float) -> Token:
        return Token.bearer(
            self.access_token,
            issued_at=clock - (wall - self.issued_wall),
            lifetime=self.expires_wall - self.issued_wall,
            token_type=self.token_type,
            refresh_token=Secret(self.refresh_token) if self.refresh_token else None,
            scope=self.scope,
        )

    @classmethod
    def of(cls, token: Token, *, clock: float, wall: float, refresh_token: str | None) -> _Entry:
        issued_wall = wall - (clock - token.issued_at)
        return cls(
            access_token=token.access_token,
            token_type=token.token_type,
            issued_wall=issued_wall,
            expires_wall=issued_wall + token.lifetime,
            refresh_token=refresh_token,
            scope=token.scope,
        )


class RedisFleet:
    """Shares tokens between the processes of a fleet; plug :meth:`wrap` into the manager.

    Args:
        redis: A ``redis.asyncio.Redis`` client (``decode_responses`` off).
        prefix: Prefix of every key this fleet uses.
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``)
            to encrypt stored tokens; needs the ``cryptography`` package.
        lease_ttl: Seconds a refresh lease lasts; longer than a token request
            may take (the manager's ``fetch_timeout``).
        redis_timeout: Bound on each Redis operation, in seconds; past it the
            process fetches for itself.
        poll_interval: How often a process waiting for another's refresh
            looks in Redis when no announcement came, in seconds.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "aiopay_auth",
        encryption_key: bytes | str | None = None,
        lease_ttl: float = 15.0,
        redis_timeout: float = 0.5,
        poll_interval: float = 0.05,
    ) -> None:
        if lease_ttl <= 0 or redis_timeout <= 0 or poll_interval <= 0:
            msg = "lease_ttl, redis_timeout and poll_interval must be positive"
            raise ConfigError(msg)
        self.redis = redis
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.redis_timeout = redis_timeout
        self.poll_interval = poll_interval
        self._encrypt, self._decrypt = _codec(encryption_key)

    def wrap(self, holder: TokenHolder, inner: TokenSource) -> SharedTokenSource:
        """The ``token_source`` seam of :class:`~aiopay_auth.TokenManager`."""
        return SharedTokenSource(self, holder, inner)

    def encode(self, entry: _Entry) -> bytes:
        """Serialize (and encrypt, with a key) one stored token."""
        return self._encrypt(json.dumps(attrs.asdict(entry)).encode())

    def decode(self, raw: bytes) -> _Entry | None:
        """Read one stored token; ``None`` if it cannot be read (wrong key, old format)."""
        try:
            data = json.loads(self._decrypt(raw))
            return _Entry(**data)
        except (ValueError, TypeError, KeyError):
            return None


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
    """A :class:`~aiopay_auth._fetch.TokenSource` that shares tokens through Redis.

    Made by :meth:`RedisFleet.wrap`; see :mod:`aiopay_auth.fleet`.

    Attributes:
        state: ``"shared"`` or ``"local"`` (Redis failed; fetching alone).
        http_fetches: Token requests this process sent to the provider.
        shared_hits: Tokens this process took from Redis instead.
    """

    def __init__(self, fleet: RedisFleet, holder: TokenHolder, inner: TokenSource) -> None:
        self._fleet = fleet
        self._holder = holder
        self._inner = inner
        base = f"{fleet.prefix}:{fleet_key(holder.provider)}"
        self._key = f"{base}:token"
        self._lease = f"{base}:lease"
        self._channel = f"{base}:events"
        self.state: FleetState = "shared"
        holder.stats.store = self.state
        self.http_fetches = 0
        self.shared_hits = 0

    async def fetch(self, refresh_token: Secret | None) -> Token:
        """Return a token newer than the holder's, from Redis or from the provider."""
        stale = self._holder.latest
        try:
            token = await self._shared_fetch(refresh_token, stale)
        except _RedisDown as down:
            self._set_state("local", reason=down.reason)
            if down.token is not None:
                # Fetched under the lease, only not stored: its refresh token
                # was spent, so never ask again with it.
                return down.token
            self.http_fetches += 1
            return await self._inner.fetch(refresh_token)
        self._set_state("shared")
        return token

    async def _shared_fetch(self, refresh_token: Secret | None, stale: Token | None) -> Token:
        fleet = self._fleet
        deadline = time.monotonic() + 2 * fleet.lease_ttl
        while True:
            shared = self._newer_than(await self._load(), stale)
            if shared is not None:
                self.shared_hits += 1
                return shared
            fence = secrets.token_hex(16)
            if await self._redis(
                fleet.redis.set(self._lease, fence, nx=True, px=_ms(fleet.lease_ttl))
            ):
                return await self._refresh_under_lease(fence, refresh_token, stale)
            if time.monotonic() > deadline:
                # The lease holder neither finished nor released: fetch alone.
                raise _RedisDown("no token from the lease holder in time")
            await self._wait_for_announcement()

    async def _refresh_under_lease(
        self, fence: str, refresh_token: Secret | None, stale: Token | None
    ) -> Token:
        fleet = self._fleet
        try:
            stored = await self._load()
            shared = self._newer_than(stored, stale)  # someone finished just before us
            if shared is not None:
                self.shared_hits += 1
                return shared
            if refresh_token is not None and stored is not None and stored.refresh_token:
                # The fleet's newest refresh token, never one another process spent.
                refresh_token = Secret(stored.refresh_token)
            self.http_fetches += 1
            token = await self._inner.fetch(refresh_token)
            keep = token.refresh_token or refresh_token
            entry = _Entry.of(
                token,
                clock=self._holder.clock(),
                wall=time.time(),
                refresh_token=keep.reveal() if keep else None,
            )
            ttl = _ms(entry.expires_wall - time.time())
            if ttl > 0:
                try:
                    await self._redis(
                        fleet.redis.eval(
                            _STORE,
                            3,
                            self._key,
                            self._lease,
                            self._channel,
                            fence,
                            fleet.encode(entry),
                            ttl,
                            "published",
                        )
                    )
                except _RedisDown as down:
                    down.token = token
                    raise
            return token
        finally:
            # Released by its holder only; if Redis is gone it expires on its own.
            with anyio.CancelScope(shield=True), contextlib.suppress(_RedisDown):
                await self._redis(fleet.redis.eval(_RELEASE, 1, self._lease, fence))

    def _newer_than(self, entry: _Entry | None, stale: Token | None) -> Token | None:
        """The stored token as this process's token, if it is newer than *stale*."""
        if entry is None:
            return None
        now_wall = time.time()
        if entry.expires_wall <= now_wall:
            return None
        if stale is not None and entry.access_token == stale.access_token:
            return None
        token = entry.to_token(clock=self._holder.clock(), wall=now_wall)
        if stale is not None and token.issued_at <= stale.issued_at:
            return None
        return token

    async def _load(self) -> _Entry | None:
        raw = await self._redis(self._fleet.redis.get(self._key))
        return None if raw is None else self._fleet.decode(raw)

    async def _wait_for_announcement(self) -> None:
        """Sleep until the lease holder announces a token, or one poll interval."""
        fleet = self._fleet
        pubsub = fleet.redis.pubsub()
        try:
            await self._redis(pubsub.subscribe(self._channel))
            await self._redis(
                pubsub.get_message(ignore_subscribe_messages=True, timeout=fleet.poll_interval)
            )
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(_RedisDown):
                await self._redis(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def _redis(self, operation: Any) -> Any:
        try:
            with anyio.fail_after(self._fleet.redis_timeout):
                return await operation
        except TimeoutError:
            raise _RedisDown("redis timed out") from None
        except Exception as exc:
            if _is_redis_error(exc):
                raise _RedisDown(f"redis failed ({type(exc).__name__})") from None
            raise

    def _set_state(self, state: FleetState, *, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        self._holder.stats.store = state
        name = self._holder.name
        if state == "local":
            log.warning("aiopay_auth.fleet_degraded", provider=name, reason=reason)
        else:
            log.info("aiopay_auth.fleet_rejoined", provider=name)


class _RedisDown(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token: Token | None = None  # a token fetched before Redis failed


def _is_redis_error(exc: BaseException) -> bool:
    from redis.exceptions import RedisError  # noqa: PLC0415 - optional dependency

    return isinstance(exc, RedisError | OSError)


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))
