"""The in-process broker: the embedded default and the test double.

It reaches only the process it lives in, which is exactly right for a single
``make run`` server.
"""

from __future__ import annotations

import asyncio

from .base import Broker, BrokerClosed, Event

_CLOSED = Event(channel="\0closed", payload="")


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._subscribed: set[str] = set()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._closed = False

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        self._closed = True
        self._subscribed.clear()
        self._events.put_nowait(_CLOSED)

    async def ping(self) -> None:
        pass  # in-process: always there

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, payload: str) -> None:
        if channel in self._subscribed:
            self._events.put_nowait(Event(channel, payload))

    async def next_published(self) -> Event:
        if self._closed:
            raise BrokerClosed()
        event = await self._events.get()
        if event is _CLOSED:
            raise BrokerClosed()
        return event
