"""Brokers, chosen by URL scheme (``memory://``; ``redis://`` for the cluster)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, BrokerClosed, Event, room_channel

__all__ = ["Broker", "BrokerClosed", "Event", "open_broker", "room_channel"]


def open_broker(url: str) -> Broker:
    """Build (not connect) the broker that ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker()
    raise ValueError(f"unsupported CHAT_BROKER_URL scheme {scheme!r}: use memory://")
