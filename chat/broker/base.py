"""The broker contract: how chat processes hear about each other's messages.

Deliberately broadcaster-sized: connect, subscribe, publish and one stream of
published events. Each process runs a single listener (see
:mod:`chat.services.realtime.fanout`) that reads :meth:`Broker.next_published` and fans
out to its local sockets, so a process holds one subscription per room no
matter how many sockets are in it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    channel: str
    payload: str


# Yielded by next_published after the broker lost its subscription and got it
# back: events published in between are gone, so listeners must catch up from
# storage.
RESYNC = Event(channel="", payload="")


class Broker(abc.ABC):
    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close connections; a pending :meth:`next_published` raises ``BrokerClosed``."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, payload: str) -> None:
        """Send ``payload`` to every process subscribed to ``channel``.

        At most once: a process that is not subscribed at that moment never
        sees it, which is why receivers backfill from storage by ``seq``.
        """

    async def publish_many(self, messages: Sequence[tuple[str, str]]) -> None:
        """Send each ``(channel, payload)``, in order, in as few round trips as the broker allows."""
        for channel, payload in messages:
            await self.publish(channel, payload)

    @abc.abstractmethod
    async def next_published(self) -> Event:
        """Wait for the next event on any subscribed channel, or :data:`RESYNC`."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the broker answers; raise Unavailable otherwise."""

    @property
    def receiving(self) -> bool:
        """False while the subscription is known to be broken (events published meanwhile are lost)."""
        return True


class BrokerClosed(Exception):
    """The broker was disconnected while a caller waited for an event."""
