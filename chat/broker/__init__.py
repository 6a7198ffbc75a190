"""The backplane between processes, chosen by URL scheme.

``memory://`` serves one process (the embedded default and the test double);
``redis://`` (also ``rediss://``, ``unix://``) joins a group of processes, and
``redis+cluster://host:port[,host:port...]`` spreads their rooms over the
masters of a Redis Cluster (Redis >= 7, sharded pub/sub). A
backplane is the broker that carries room channels plus what must be shared
by every process of a group: presence, socket leases, and the rate limiter's
counters (named by a ``limits`` storage URI). Backend modules are imported
only when their scheme is asked for, so a process without Redis never imports
the Redis client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .base import RESYNC, Broker, BrokerClosed, Event
from .channels import CONTROL_CHANNEL, ROOMS_CHANNEL, room_channel, user_channel
from .leases import LeaseStore
from .presence import PresenceStore

__all__ = [
    "CONTROL_CHANNEL",
    "RESYNC",
    "ROOMS_CHANNEL",
    "Backplane",
    "Broker",
    "BrokerClosed",
    "Event",
    "LeaseStore",
    "PresenceStore",
    "open_backplane",
    "room_channel",
    "user_channel",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Kept here, not imported from .redis_cluster: naming the scheme must not
# import the Redis client.
REDIS_CLUSTER_SCHEMES = frozenset({"redis+cluster"})


@dataclass(frozen=True)
class Backplane:
    broker: Broker
    presence: PresenceStore
    leases: LeaseStore
    # Where the rate limiter keeps its counts (a ``limits`` storage URI).
    limits_uri: str


def open_backplane(url: str, clock: Callable[[], float] = time.time) -> Backplane:
    """Build (not connect) what ``url`` names; ``clock`` is wall-clock time for presence expiry."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .leases import MemoryLeases
        from .memory import MemoryBroker
        from .presence import MemoryPresence

        return Backplane(MemoryBroker(), MemoryPresence(clock), MemoryLeases(clock), "async+memory://")
    if scheme in REDIS_SCHEMES:
        from .redis import RedisBroker, RedisLeases, RedisPresence

        broker = RedisBroker(url)
        return Backplane(broker, RedisPresence(broker, clock), RedisLeases(broker, clock), _limits_uri(url))
    if scheme in REDIS_CLUSTER_SCHEMES:
        from .redis import RedisLeases, RedisPresence
        from .redis_cluster import RedisClusterBroker, limits_uri

        cluster = RedisClusterBroker(url)
        return Backplane(cluster, RedisPresence(cluster, clock), RedisLeases(cluster, clock), limits_uri(url))
    raise ValueError(
        f"unsupported CHAT_BROKER_URL scheme {scheme!r}: use memory://, redis:// (rediss://, unix://)"
        " or redis+cluster://host:port[,host:port...]"
    )


def _limits_uri(url: str) -> str:
    """The ``limits`` storage URI for the same Redis as ``url``."""
    scheme, rest = url.split("://", 1)
    return f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{scheme}://{rest}"
