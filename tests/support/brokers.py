"""Helpers for tests that read a broker's events the way the fan-out listener does."""

from __future__ import annotations

import asyncio
import contextlib

from chat.broker import RESYNC, Broker, BrokerClosed, Event
from chat.errors import Unavailable
from tests.support.waiting import eventually

# How long Redis may take to come back and the broker to notice and resubscribe.
RECOVERY_TIMEOUT = 20.0


class Collector:
    """Reads a broker's events in the background, as the fan-out listener does."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.events: list[Event] = []
        self.closed = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self.events.append(await self.broker.next_published())
        except BrokerClosed:
            self.closed = True

    def payloads(self, on: str) -> list[str]:
        return [event.payload for event in self.events if event.channel == on]

    @property
    def resyncs(self) -> int:
        return sum(1 for event in self.events if event is RESYNC)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def publish_until_received(
    publisher: Broker, collector: Collector, on: str, payload: str, timeout: float = RECOVERY_TIMEOUT
) -> None:
    """Publish ``payload`` on ``on`` again and again until ``collector`` has it.

    Publishing may fail while the server is still coming back, and a publish
    that lands before the subscriber has resubscribed is gone (at most once).
    """

    async def arrived_or_published_again() -> bool:
        if payload in collector.payloads(on):
            return True
        with contextlib.suppress(Unavailable):
            await publisher.publish(on, payload)
        return False

    await eventually(arrived_or_published_again, timeout, f"{payload!r} arriving on {on}", interval=0.1)
