"""The distributed broker: Redis pub/sub through redis-py's asyncio client.

One pub/sub connection per process carries every room channel this process
subscribes to; publishing uses a separate pooled client. Redis pub/sub is at
most once: whatever is published while the subscriber is disconnected is gone.
So the subscriber reconnects with backoff, resubscribes every channel, and then
yields a :data:`~chat.broker.base.RESYNC` event: the fan-out answers it by
reading from storage everything after the last seq it delivered in each room.

The subscriber client never retries internally, so every disconnect surfaces
here and none can be papered over without a resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from ..errors import Unavailable
from ..models import OnlineUser
from .base import RESYNC, Broker, BrokerClosed, Event
from .leases import LeaseStore
from .presence import PresenceStore, unique_users

log = logging.getLogger(__name__)

RECONNECT_BASE_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# How long one read waits before checking for shutdown; not a latency bound.
POLL_SECONDS = 1.0

# At most this many connections per client; a command beyond them waits up to
# POOL_WAIT_SECONDS for one to come free. Unbounded, the storm of handshakes
# after a restart opened a connection per concurrent command, thousands,
# until Redis refused every new one ("max number of clients reached").
POOL_CONNECTIONS = 256
POOL_WAIT_SECONDS = 10.0


def bounded_pool(url: str, **options: Any) -> aioredis.BlockingConnectionPool:
    """A pool of POOL_CONNECTIONS connections to the Redis of ``url`` that makes commands wait, not fail."""
    return aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **options
    )


class RedisBroker(Broker):
    def __init__(self, url: str) -> None:
        self.url = url
        self.client: aioredis.Redis | None = None
        self._subscriber: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()
        self._has_channels = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self._resync_due = False
        # Set when a (un)subscribe failed: the server may not hold the
        # subscriptions we think it does, so the listener must rebuild them.
        self._subscription_lost = False

    async def connect(self) -> None:
        if self.client is not None:
            return
        self.client = aioredis.Redis.from_pool(
            bounded_pool(self.url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30)
        )
        self._subscriber = aioredis.from_url(
            self.url, decode_responses=True, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)
        )
        self._pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)

    async def disconnect(self) -> None:
        self._closed = True
        self._has_channels.set()  # wake a listener waiting for a first channel
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        for client in (self._subscriber, self.client):
            if client is not None:
                await client.aclose()
        self.client = self._subscriber = self._pubsub = None

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.add(channel)
            try:
                await self._require_pubsub().subscribe(channel)
            except (RedisError, OSError) as exc:
                # The listener resubscribes every channel when it reconnects,
                # then resyncs from storage, so nothing is lost by going on.
                # It must be told: the pub/sub connection may never have been
                # made (then get_message raises RuntimeError, not RedisError),
                # or redis-py may already have reconnected it with only the old
                # channels, with no error left for the listener to see.
                self._subscription_lost = True
                log.warning("subscribe to %s failed (%s); the listener will retry", channel, exc)
            # Wake a listener waiting for a first channel only now: earlier, it
            # would read from a pub/sub connection that may not exist yet.
            self._has_channels.set()

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.discard(channel)
            if not self._channels:
                self._has_channels.clear()
            try:
                await self._require_pubsub().unsubscribe(channel)
            except (RedisError, OSError) as exc:
                self._subscription_lost = True
                log.warning("unsubscribe from %s failed (%s)", channel, exc)

    async def publish(self, channel: str, payload: str) -> None:
        try:
            await self.require_client().publish(channel, payload)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis: {exc}") from exc

    async def publish_many(self, messages: Sequence[tuple[str, str]]) -> None:
        try:
            for start in range(0, len(messages), COMMANDS_PER_PIPELINE):
                async with self.require_client().pipeline(transaction=False) as pipe:
                    for channel, payload in messages[start : start + COMMANDS_PER_PIPELINE]:
                        pipe.publish(channel, payload)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self.require_client().ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis: {exc}") from exc

    @property
    def receiving(self) -> bool:
        # Until the fan-out has taken the RESYNC of a reconnect, what was
        # published while the connection was down is still unaccounted for.
        return not self._closed and self._pubsub is not None and not self._subscription_lost and not self._resync_due

    async def next_published(self) -> Event:
        while True:
            if self._closed:
                raise BrokerClosed()
            if self._resync_due:
                self._resync_due = False
                return RESYNC
            if not self._has_channels.is_set():
                # Set once a subscription is complete: reading before that
                # finds no pub/sub connection at all.
                await self._has_channels.wait()
                continue
            if self._subscription_lost:
                self._subscription_lost = False
                await self._reconnect()
                continue
            try:
                message = await self._require_pubsub().get_message(timeout=POLL_SECONDS)
            except (RedisError, OSError) as exc:
                if self._closed:
                    raise BrokerClosed() from exc
                log.warning("Redis subscription lost (%s); reconnecting", exc)
                await self._reconnect()
                continue
            if message is not None and message["type"] == "message":
                return Event(channel=message["channel"], payload=message["data"])

    async def _reconnect(self) -> None:
        """Replace the pub/sub connection and resubscribe, retrying with backoff."""
        delay = RECONNECT_BASE_SECONDS
        while not self._closed:
            async with self._lock:
                old, self._pubsub = self._pubsub, None
                if old is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await old.aclose()
                subscriber = self._subscriber
                if subscriber is None:
                    return
                pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
                try:
                    if self._channels:
                        await pubsub.subscribe(*self._channels)
                    else:
                        await pubsub.ping()
                except (RedisError, OSError) as exc:
                    await pubsub.aclose()
                    log.info("Redis still unreachable (%s); retrying in %.1fs", exc, delay)
                else:
                    if self._closed:  # disconnect() ran while we were reconnecting
                        await pubsub.aclose()
                        return
                    self._pubsub = pubsub
                    self._resync_due = True
                    log.info("Redis subscription restored (%d channels)", len(self._channels))
                    return
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def require_client(self) -> aioredis.Redis:
        if self.client is None:
            raise Unavailable("Redis broker is not connected")
        return self.client

    def _require_pubsub(self) -> PubSub:
        if self._pubsub is None:
            raise RedisError("no subscription connection")
        return self._pubsub


class RedisClientSource(Protocol):
    """What the presence and lease stores need of a broker: its command client.

    A plain Redis client (:class:`RedisBroker`) or a cluster client
    (``chat.broker.redis_cluster``): every operation below touches one key,
    so each runs within one hash slot on a cluster too, and the pipelines
    that span keys are not transactions (a cluster client splits them per
    master; each command stays atomic alone).
    """

    def require_client(self) -> Any: ...


@contextlib.contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        # RedisClusterException is not a RedisError: a cluster client raises
        # it when no node answers at all.
        raise Unavailable(f"Redis: {exc}") from exc


# Commands per pipeline when renewing many entries: one pipeline of thousands
# held the loop for 100 ms and more every heartbeat (encoding and parsing
# them all at once); slices of this many let other work run in between.
COMMANDS_PER_PIPELINE = 256


async def _renew_members(
    source: RedisClientSource, members: Iterable[tuple[str, str]], expiry: float, ttl: float
) -> None:
    """Give each (sorted set, member) the score ``expiry``, and each set ``ttl`` seconds more, in slices.

    One ZADD of every member of a set and one EXPIRE per set, not one of
    each per member.
    """
    by_key: dict[str, dict[str, float]] = {}
    for key, member in members:
        by_key.setdefault(key, {})[member] = expiry
    keys = list(by_key)
    step = COMMANDS_PER_PIPELINE // 2
    with _unavailable_on_error():
        for start in range(0, len(keys), step):
            async with source.require_client().pipeline(transaction=False) as pipe:
                for key in keys[start : start + step]:
                    pipe.zadd(key, by_key[key])
                    pipe.expire(key, int(ttl) + 1)
                await pipe.execute()


async def _remove_members(source: RedisClientSource, members: Iterable[tuple[str, str]]) -> None:
    """Remove each (sorted set, member): one ZREM per set, in pipelines of a few hundred."""
    by_key: dict[str, list[str]] = {}
    for key, member in members:
        by_key.setdefault(key, []).append(member)
    keys = list(by_key)
    with _unavailable_on_error():
        for start in range(0, len(keys), COMMANDS_PER_PIPELINE):
            async with source.require_client().pipeline(transaction=False) as pipe:
                for key in keys[start : start + COMMANDS_PER_PIPELINE]:
                    pipe.zrem(key, *by_key[key])
                await pipe.execute()


def _presence_key(room_id: str) -> str:
    return f"chat:presence:{room_id}"


def _online_user(member: str) -> OnlineUser:
    data = json.loads(member)
    return OnlineUser(username=data["username"], id=data["id"])


def _member(instance: str, user: OnlineUser) -> str:
    return json.dumps({"instance": instance, "id": user.id, "username": user.username}, sort_keys=True)


class RedisPresence(PresenceStore):
    """A sorted set per room: members name (instance, user), scores are expiry times.

    Expired members are ignored on read and pruned on the way; the key itself
    expires too, so a room nobody visits again leaves nothing behind.
    """

    def __init__(self, broker: RedisClientSource, clock: Callable[[], float] = time.time) -> None:
        self._broker = broker
        # Wall-clock seconds: expiry scores are compared across processes.
        self._clock = clock

    async def add(self, room_id: str, instance: str, user: OnlineUser, ttl: float) -> None:
        await self.refresh(instance, [(room_id, user)], ttl)

    async def remove(self, room_id: str, instance: str, user: OnlineUser) -> None:
        with _unavailable_on_error():
            await self._broker.require_client().zrem(_presence_key(room_id), _member(instance, user))

    async def remove_many(self, instance: str, entries: Iterable[tuple[str, OnlineUser]]) -> None:
        await _remove_members(
            self._broker, [(_presence_key(room_id), _member(instance, user)) for room_id, user in entries]
        )

    async def refresh(self, instance: str, entries: Iterable[tuple[str, OnlineUser]], ttl: float) -> None:
        # Nothing sent for no entries (an empty cluster pipeline still asks for the slot map).
        members = [(_presence_key(room_id), _member(instance, user)) for room_id, user in entries]
        await _renew_members(self._broker, members, self._clock() + ttl, ttl)

    async def online(self, room_id: str) -> list[OnlineUser]:
        return (await self.online_in_each([room_id]))[room_id]

    async def online_in_each(self, room_ids: Sequence[str]) -> dict[str, list[OnlineUser]]:
        now = self._clock()
        found: dict[str, list[OnlineUser]] = {}
        step = COMMANDS_PER_PIPELINE // 2
        with _unavailable_on_error():
            for start in range(0, len(room_ids), step):
                rooms = room_ids[start : start + step]
                async with self._broker.require_client().pipeline(transaction=False) as pipe:
                    for room_id in rooms:
                        key = _presence_key(room_id)
                        pipe.zremrangebyscore(key, "-inf", now)
                        pipe.zrangebyscore(key, now, "+inf")
                    replies = await pipe.execute()
                for room_id, members in zip(rooms, replies[1::2], strict=True):
                    found[room_id] = unique_users(_online_user(member) for member in members)
        return found


# Take a place unless the pool is full, atomically: expired places first leave.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _lease_key(pool: str) -> str:
    return f"chat:leases:{pool}"


class RedisLeases(LeaseStore):
    """A sorted set per pool: members are holders, scores their expiry times."""

    def __init__(self, broker: RedisClientSource, clock: Callable[[], float] = time.time) -> None:
        self._broker = broker
        self._clock = clock

    async def acquire(self, pool: str, holder: str, limit: int, ttl: float) -> bool:
        now = self._clock()
        with _unavailable_on_error():
            # The script reads and writes only KEYS[1], as a cluster requires.
            taken = await self._broker.require_client().eval(
                _ACQUIRE, 1, _lease_key(pool), holder, limit, now, now + ttl, int(ttl) + 1
            )
        return bool(taken)

    async def release(self, pool: str, holder: str) -> None:
        with _unavailable_on_error():
            await self._broker.require_client().zrem(_lease_key(pool), holder)

    async def release_many(self, leases: Iterable[tuple[str, str]]) -> None:
        await _remove_members(self._broker, [(_lease_key(pool), holder) for pool, holder in leases])

    async def renew(self, leases: Iterable[tuple[str, str]], ttl: float) -> None:
        members = [(_lease_key(pool), holder) for pool, holder in leases]
        await _renew_members(self._broker, members, self._clock() + ttl, ttl)

    async def count(self, pool: str) -> int:
        with _unavailable_on_error():
            return int(await self._broker.require_client().zcount(_lease_key(pool), self._clock(), "+inf"))
