"""The sharded broker: Redis Cluster (Redis >= 7) with sharded pub/sub.

Plain ``PUBLISH`` on a cluster is broadcast to every node over the cluster
bus, so each message costs every master; sharded pub/sub (``SPUBLISH`` /
``SSUBSCRIBE``, Redis 7) instead keeps a channel on the master that owns its
hash slot, like a key. Room channels keep their names (``chat:room:<id>``,
no hash tag): each room hashes to its own slot, which spreads the rooms, and
their traffic, over the masters.

A subscriber must hold one connection to each master that owns a channel it
listens to. redis-py's asyncio ``ClusterPubSub`` does that, but repairs its
per-node connections on its own (reconnect, resubscribe, follow slot moves)
with no way to learn that messages fell into the gap, and the fan-out must
hear of every gap to catch up from storage. So this module keeps its own
per-master connections (:class:`_Shard`), each built to never retry, from the
slot map of a :class:`~redis.asyncio.cluster.RedisCluster` client, which also
publishes and serves presence and leases.

When a master's connection breaks (node killed, failover), or the master
drops a channel (its slot was migrated: Redis 7 sends ``sunsubscribe``), or
answers ``MOVED``, a background repair refreshes the slot map, replaces the
broken connections, resubscribes what they carried on the slots' current
owners, retrying with backoff, and then yields
:data:`~chat.broker.base.RESYNC`. Channels on healthy masters keep delivering
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from ..errors import Unavailable
from .base import RESYNC, Broker, BrokerClosed, Event

log = logging.getLogger(__name__)

# chat.broker.REDIS_CLUSTER_SCHEMES names the same (there without importing this module).
CLUSTER_SCHEMES = frozenset({"redis+cluster"})

RECONNECT_BASE_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# How long one read waits before checking for shutdown; not a latency bound.
POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5.0
# RedisClusterException is not a RedisError: the client raises it when no
# node answers at all, or a slot is not covered.
_FAILURES = (RedisError, RedisClusterException, OSError)
# redis-py raises RuntimeError when a pub/sub connection was never made.
_SUBSCRIPTION_FAILURES = (*_FAILURES, RuntimeError)


@dataclass(frozen=True)
class ClusterAddress:
    """What a ``redis+cluster://[user:password@]host:port[,host:port...]`` URL names."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterAddress:
    """Startup nodes and credentials; any one reachable node is enough to find the rest."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    if parts.path not in ("", "/", "/0"):
        # A cluster has one keyspace: SELECT is refused, so a db would be a lie.
        raise ValueError(f"a Redis Cluster has only database 0, not {parts.path.lstrip('/')!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Redis Cluster nodes must be host:port, not {host_port!r} in {url!r}")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterAddress(tuple(nodes), username, password)


def limits_uri(url: str) -> str:
    """The ``limits`` storage URI for the same cluster: ``async+redis+cluster://`` (limits 5.8, redis-py client).

    Credentials and nodes are passed on as written: limits parses the same
    ``[user:password@]host:port,host:port`` form.
    """
    parse_cluster_url(url)  # refuse what we could not use either
    return f"async+redis+cluster://{urlsplit(url).netloc}"


@dataclass(eq=False)
class _Shard:
    """One master's pub/sub connection and the channels this process holds on it."""

    name: str
    client: aioredis.Redis
    pubsub: PubSub
    # Set once a read or write on the connection failed: it is never used again.
    broken: bool = False
    # sunsubscribe confirmations still due for our own unsubscribes, so that
    # one the master sends by itself (slot migrated away) is told apart.
    unsubscribing: Counter[str] = field(default_factory=Counter)
    reader: asyncio.Task[None] | None = None

    async def close(self) -> None:
        self.broken = True
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        with contextlib.suppress(*_SUBSCRIPTION_FAILURES):
            await self.pubsub.aclose()
        with contextlib.suppress(*_FAILURES):
            await self.client.aclose()


class RedisClusterBroker(Broker):
    def __init__(self, url: str) -> None:
        self.url = url
        self.address = parse_cluster_url(url)
        self.client: RedisCluster | None = None
        self._channels: set[str] = set()  # wanted
        self._held: dict[str, _Shard] = {}  # subscribed, on which master
        self._shards: dict[str, _Shard] = {}  # by node name (host:port)
        # Every reader feeds one queue: next_published has one place to wait,
        # and each master's messages keep their order (one reader each).
        # None only wakes the listener (disconnect).
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._closed = False
        self._repair: asyncio.Task[None] | None = None
        # Set by whatever finds a subscription broken; the repair clears it
        # when it starts a pass and finishes only after a pass with none.
        self._lost = False
        self._resync_queued = False

    async def connect(self) -> None:
        # Lazy like RedisBroker: nothing is contacted until first use, so a
        # process starts (and serves from storage) while the cluster is down.
        if self.client is not None:
            return
        self._closed = False
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.address.nodes],
            # One retry after a connection error (the client refreshes its slot
            # map in between), then Unavailable: a publish must not hang the send.
            retry=Retry(NoBackoff(), 1),
            socket_timeout=CONNECT_TIMEOUT_SECONDS,
            health_check_interval=30,
            username=self.address.username,
            password=self.address.password,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )

    async def disconnect(self) -> None:
        self._closed = True
        self._events.put_nowait(None)  # wake a waiting listener
        if self._repair is not None:
            self._repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repair
            self._repair = None
        async with self._lock:
            shards, self._shards = list(self._shards.values()), {}
            self._held.clear()
            for shard in shards:
                await shard.close()
            if self.client is not None:
                with contextlib.suppress(*_FAILURES):
                    await self.client.aclose()
            self.client = None

    # -- subscriptions ---------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.add(channel)
            if channel in self._held:
                return
            try:
                await self._subscribe_on_owner(channel)
            except _SUBSCRIPTION_FAILURES as exc:
                # Like RedisBroker: the repair subscribes it once the owner
                # answers, then resyncs from storage, so nothing is lost by going on.
                log.warning("subscribe to %s failed (%s); the listener will retry", channel, exc)
                self._start_repair()

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.discard(channel)
            shard = self._held.pop(channel, None)
            if shard is None or shard.broken:
                return
            shard.unsubscribing[channel] += 1
            try:
                await shard.pubsub.sunsubscribe(channel)
            except _SUBSCRIPTION_FAILURES as exc:
                # Its other channels are in doubt too: rebuild that connection.
                log.warning("unsubscribe from %s failed (%s)", channel, exc)
                self._break(shard)

    async def _subscribe_on_owner(self, channel: str) -> None:
        """SSUBSCRIBE on the master that owns the channel's slot (caller holds the lock)."""
        cluster = self.require_client()
        await cluster.initialize()  # a no-op once the slot map is known
        node = cluster.get_node_from_key(channel)
        if node is None:
            raise RedisClusterException(f"no master serves {channel}")
        shard = self._shards.get(node.name)
        if shard is not None and shard.broken:
            raise RedisError(f"connection to {node.name} is being replaced")
        if shard is None:
            client = aioredis.Redis(
                host=node.host,
                port=int(node.port),
                # Never retried or silently reconnected: every failure must
                # reach us, since a gap in the subscription needs a resync.
                retry=Retry(NoBackoff(), 0),
                username=self.address.username,
                password=self.address.password,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
            shard = _Shard(node.name, client, client.pubsub())
            self._shards[node.name] = shard
        try:
            # One channel per SSUBSCRIBE: all channels of one command must
            # share a slot (CROSSSLOT otherwise), and rooms do not.
            await shard.pubsub.ssubscribe(channel)
        except _SUBSCRIPTION_FAILURES:
            self._break(shard)
            raise
        self._held[channel] = shard
        if shard.reader is None:
            shard.reader = asyncio.create_task(self._read(shard), name=f"redis-cluster-reader {node.name}")

    def _break(self, shard: _Shard) -> None:
        """Give up on ``shard``'s connection: the repair replaces it and resyncs."""
        shard.broken = True
        self._start_repair()

    # -- receiving -------------------------------------------------------------

    async def _read(self, shard: _Shard) -> None:
        """Move one master's messages into the queue until its connection fails."""
        try:
            while not shard.broken and not self._closed:
                message = await shard.pubsub.get_message(timeout=POLL_SECONDS)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                if kind == "smessage":
                    # Only what is wanted and held here: a message may still
                    # arrive for a channel just unsubscribed.
                    if self._held.get(channel) is shard:
                        self._events.put_nowait(Event(channel=channel, payload=message["data"]))
                elif kind == "sunsubscribe":
                    if shard.unsubscribing[channel] > 0:
                        shard.unsubscribing[channel] -= 1
                        if not shard.unsubscribing[channel]:
                            del shard.unsubscribing[channel]
                    elif self._held.get(channel) is shard:
                        # The master dropped it on its own: its slot moved
                        # to another master (resharding or failover).
                        log.warning("Redis Cluster node %s dropped %s (slot moved); resubscribing", shard.name, channel)
                        del self._held[channel]
                        self._start_repair()
        except _SUBSCRIPTION_FAILURES as exc:
            if self._closed or shard.broken:
                return
            log.warning("Redis Cluster subscription to %s lost (%s); reconnecting", shard.name, exc)
            self._break(shard)

    @property
    def receiving(self) -> bool:
        # Until the fan-out has taken the RESYNC of a repair, what was
        # published on the broken connections is still unaccounted for.
        return self.client is not None and not self._closed and self._repair is None and not self._resync_queued

    async def next_published(self) -> Event:
        while True:
            if self._closed:
                raise BrokerClosed()
            event = await self._events.get()
            if event is None:
                continue
            if event is RESYNC:
                self._resync_queued = False
                return event
            if event.channel in self._channels:
                return event

    # -- repair ----------------------------------------------------------------

    def _start_repair(self) -> None:
        self._lost = True
        if self._repair is None and not self._closed:
            self._repair = asyncio.create_task(self._run_repair(), name="redis-cluster-repair")

    async def _run_repair(self) -> None:
        delay = RECONNECT_BASE_SECONDS
        try:
            while not self._closed:
                self._lost = False
                async with self._lock:
                    restored = await self._restore()
                # No await between this check and giving up the task: a
                # connection that breaks later starts a repair of its own.
                if restored and not self._lost:
                    self._repair = None
                    self._resync_queued = True
                    self._events.put_nowait(RESYNC)
                    log.info("Redis Cluster subscriptions restored (%d channels)", len(self._channels))
                    return
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        finally:
            if self._repair is asyncio.current_task():
                self._repair = None

    async def _restore(self) -> bool:
        """One pass: fresh slot map, broken connections replaced, every channel on its owner."""
        cluster = self.client
        if cluster is None:
            return False
        try:
            await cluster.initialize()
            # Fresh even if the client thinks its map is fine: a failover or a
            # migrated slot is why we are here.
            await cluster.nodes_manager.initialize()
        except _SUBSCRIPTION_FAILURES as exc:
            log.info("Redis Cluster still unreachable (%s); retrying", exc)
            return False
        await self._drop_broken_shards()
        placed = [await self._place(cluster, channel) for channel in sorted(self._channels)]
        if not self._channels:
            # Nothing to subscribe: prove the cluster answers before saying so.
            try:
                await cluster.ping()
            except _SUBSCRIPTION_FAILURES:
                return False
        return all(placed) and not any(shard.broken for shard in self._shards.values())

    async def _drop_broken_shards(self) -> None:
        for name, shard in list(self._shards.items()):
            if shard.broken:
                del self._shards[name]
                for channel in [channel for channel, holder in self._held.items() if holder is shard]:
                    del self._held[channel]
                await shard.close()

    async def _place(self, cluster: RedisCluster, channel: str) -> bool:
        """Whether ``channel`` is now subscribed on the master that owns its slot."""
        holder = self._held.get(channel)
        try:
            owner = cluster.get_node_from_key(channel)
        except RedisClusterException as exc:  # slot not covered, for now
            log.info("Redis Cluster: %s not resubscribed yet (%s)", channel, exc)
            return False
        if holder is not None and owner is not None and holder.name == owner.name:
            return True
        if holder is not None:
            # Held on a master that no longer owns the slot: it would hear
            # nothing there (SPUBLISH goes to the owner), so move it.
            del self._held[channel]
            holder.unsubscribing[channel] += 1
            try:
                await holder.pubsub.sunsubscribe(channel)
            except _SUBSCRIPTION_FAILURES:
                holder.broken = True  # the next pass replaces it
        try:
            await self._subscribe_on_owner(channel)
        except _SUBSCRIPTION_FAILURES as exc:
            log.info("Redis Cluster: %s not resubscribed yet (%s)", channel, exc)
            return False
        return True

    # -- publishing ------------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        try:
            await self.require_client().spublish(channel, payload)
        except _FAILURES as exc:
            raise Unavailable(f"Redis Cluster: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self.require_client().ping()
        except _FAILURES as exc:
            raise Unavailable(f"Redis Cluster: {exc}") from exc

    def require_client(self) -> RedisCluster:
        if self.client is None:
            raise Unavailable("Redis Cluster broker is not connected")
        return self.client
