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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .base import RESYNC, Broker, BrokerClosed, Event
from .channels import CONTROL_CHANNEL, ROOMS_CHANNEL, room_channel, user_channel
from .leases import LeaseStore
from .presence import PresenceStore

__all__ = [
    "BROKER_FORMS",
    "BROKER_SCHEMES",
    "CONTROL_CHANNEL",
    "RESYNC",
    "ROOMS_CHANNEL",
    "Backplane",
    "Broker",
    "BrokerClosed",
    "Event",
    "LeaseStore",
    "PresenceStore",
    "check_backplane_url",
    "open_backplane",
    "room_channel",
    "user_channel",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Kept here, not imported from .redis_cluster: naming the scheme must not
# import the Redis client.
REDIS_CLUSTER_SCHEMES = frozenset({"redis+cluster"})
BROKER_SCHEMES = frozenset({"memory"}) | REDIS_SCHEMES | REDIS_CLUSTER_SCHEMES
# How broker URLs look, for the message that refuses one.
BROKER_FORMS = (
    "memory:// (one process), redis://[:password@]host[:port][/db], rediss://... (TLS), "
    "unix:///path/to/redis.sock or redis+cluster://host:port[,host:port...]"
)


@dataclass(frozen=True)
class Backplane:
    broker: Broker
    presence: PresenceStore
    leases: LeaseStore
    # Where the rate limiter keeps its counts (a ``limits`` storage URI), and
    # the options of that storage's client.
    limits_uri: str
    limits_options: Mapping[str, Any] = field(default_factory=dict)


def open_backplane(url: str, clock: Callable[[], float] = time.time) -> Backplane:
    """Build (not connect) what ``url`` names; ``clock`` is wall-clock time for presence expiry."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .leases import MemoryLeases
        from .memory import MemoryBroker
        from .memory_limits import SCHEME as LIMITS_SCHEME  # registers the storage with ``limits``
        from .presence import MemoryPresence

        return Backplane(MemoryBroker(), MemoryPresence(clock), MemoryLeases(clock), f"{LIMITS_SCHEME}://")
    if scheme in REDIS_SCHEMES:
        from .redis import RedisBroker, RedisLeases, RedisPresence, bounded_pool

        broker = RedisBroker(url)
        return Backplane(
            broker,
            RedisPresence(broker, clock),
            RedisLeases(broker, clock),
            _limits_uri(url),
            {"connection_pool": bounded_pool(url)},
        )
    if scheme in REDIS_CLUSTER_SCHEMES:
        from .redis import RedisLeases, RedisPresence
        from .redis_cluster import RedisClusterBroker, limits_uri

        cluster = RedisClusterBroker(url)
        return Backplane(cluster, RedisPresence(cluster, clock), RedisLeases(cluster, clock), limits_uri(url))
    raise ValueError(f"unsupported CHAT_BROKER_URL scheme {scheme!r}: use {BROKER_FORMS}")


def check_backplane_url(url: str) -> None:
    """ValueError saying what is wrong with a URL of one of BROKER_SCHEMES, if anything; never connects."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path:
            raise ValueError("no socket path")
    elif scheme in REDIS_SCHEMES:
        _ = parts.port  # raises ValueError for a port that is not a number in range
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"the database after the host must be a number, got {database!r}")
    elif scheme in REDIS_CLUSTER_SCHEMES:
        from .redis_cluster import parse_cluster_url

        parse_cluster_url(url)


def _limits_uri(url: str) -> str:
    """The ``limits`` storage URI for the same Redis as ``url``."""
    scheme, rest = url.split("://", 1)
    return f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{scheme}://{rest}"
