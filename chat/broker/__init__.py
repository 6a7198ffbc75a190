"""Brokers, chosen by URL scheme: ``memory://`` (one process) or ``redis://`` (a cluster)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import RESYNC, Broker, BrokerClosed, Event, room_channel
from .presence import MemoryPresence, OnlineUser, PresenceStore

__all__ = [
    "RESYNC", "Broker", "BrokerClosed", "Event", "OnlineUser", "PresenceStore",
    "open_broker", "open_presence", "room_channel",
]


def open_broker(url: str) -> Broker:
    """Build (not connect) the broker that ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker()
    if scheme in {"redis", "rediss", "unix"}:
        from .redis import RedisBroker

        return RedisBroker(url)
    raise ValueError(f"unsupported CHAT_BROKER_URL scheme {scheme!r}: use memory:// or redis://")


def open_presence(broker: Broker) -> PresenceStore:
    """The presence store that goes with ``broker``: shared through Redis, or in-process."""
    from .redis import RedisBroker, RedisPresence

    if isinstance(broker, RedisBroker):
        return RedisPresence(broker)
    return MemoryPresence()
