"""One writer per room in this process: senders to a room take turns instead of racing for the same seq."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ...errors import Unavailable


class RoomWriters:
    """One writer per room in this process.

    Senders in the same room wait here for their turn instead of racing each
    other for the same seq; only writers in other processes can still
    collide, and the unique ``(room_id, seq)`` index makes the loser read
    again. A room's lock lives only while someone holds or waits for it.

    The wait is bounded: while the database is slow or down, each turn can
    take the full server-selection timeout, and a queue of senders must not
    add those up (nor hold a graceful shutdown hostage). A sender that waits
    longer than ``max_wait`` gets Unavailable and retries with its client_id.
    """

    def __init__(self, max_wait: float = 5.0) -> None:
        self.max_wait = max_wait
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, room_id: str) -> AsyncIterator[None]:
        lock, waiting = self._locks.get(room_id, (asyncio.Lock(), 0))
        self._locks[room_id] = (lock, waiting + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), self.max_wait)
            except TimeoutError:
                raise Unavailable(f"messages to room {room_id} are queueing; retry shortly") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, waiting = self._locks[room_id]
            if waiting == 1:
                del self._locks[room_id]
            else:
                self._locks[room_id] = (lock, waiting - 1)
