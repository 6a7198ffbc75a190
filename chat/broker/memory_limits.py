"""The rate limiter's counts for one process: the ``limits`` library's in-memory storage, swept at a steady pace.

The library's own async storage sweeps out expired entries after every
count: a pass over every key, each key a hop to a worker thread and back. With
a few thousand people counted, a busy process spent most of its loop on it (one
process at 200 messages/s over 2,000 sockets: 97% of a core, 7% when idle).
Here the same counting runs with a sweep at most once a second, on the loop,
without threads: an expired entry may linger a second, which changes no count
(a moving window only counts entries younger than the window).
"""

from __future__ import annotations

import asyncio
import bisect
import time

from limits.aio.storage import MemoryStorage

# How often expired entries are swept out; counts never depend on it.
SWEEP_SECONDS = 1.0

SCHEME = "chat+memory"


class PacedMemoryStorage(MemoryStorage):
    """``limits``' ``async+memory`` storage (moving windows and counters alike), swept once a second."""

    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012 (the library reads it from the class)

    # The library calls this (a private name) after every count.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        if self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(self._sweep_later())

    async def _sweep_later(self) -> None:
        await asyncio.sleep(SWEEP_SECONDS)
        self.sweep(time.time())

    def sweep(self, now: float) -> None:
        """Drop entries and counters expired by ``now``.

        Synchronous: no count (whose critical sections never await) is half
        done while it runs.
        """
        for key, events in list(self.events.items()):
            # Newest first: the entries still alive are a prefix.
            alive = events[: bisect.bisect_left(events, -now, key=lambda entry: -entry.expiry)]
            if alive:
                self.events[key] = alive
            else:
                del self.events[key]
                self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)
