"""The backplane between processes, chosen by URL scheme.

``memory://`` serves one process (the embedded default and the test double);
``redis://`` (also ``rediss://``, ``unix://``) joins a group of processes. A
backplane is the broker that carries room channels plus the stores that must
be shared by every process of a group (presence today). Backend modules are
imported only when their scheme is asked for, so a process without Redis
never imports the Redis client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .base import RESYNC, Broker, BrokerClosed, Event, room_channel
from .presence import PresenceStore

__all__ = [
    "RESYNC",
    "Backplane",
    "Broker",
    "BrokerClosed",
    "Event",
    "PresenceStore",
    "open_backplane",
    "room_channel",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


@dataclass(frozen=True)
class Backplane:
    broker: Broker
    presence: PresenceStore


def open_backplane(url: str, clock: Callable[[], float] = time.time) -> Backplane:
    """Build (not connect) what ``url`` names; ``clock`` is wall-clock time for presence expiry."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker
        from .presence import MemoryPresence

        return Backplane(MemoryBroker(), MemoryPresence(clock))
    if scheme in REDIS_SCHEMES:
        from .redis import RedisBroker, RedisPresence

        broker = RedisBroker(url)
        return Backplane(broker, RedisPresence(broker, clock))
    raise ValueError(f"unsupported CHAT_BROKER_URL scheme {scheme!r}: use memory:// or redis://")
