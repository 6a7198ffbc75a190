"""Look-ups by key that arrive together go to storage together.

While one read is in flight, keys asked for meanwhile wait and go in the next
read, all at once: under a storm (thousands of sockets reconnecting after a
restart) a process makes a few reads of hundreds of keys instead of
thousands of reads of one, and when it is quiet each key is read at once,
alone. The same idea as group commit, for reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger(__name__)


class BatchedLookup(Generic[K, V]):
    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], max_batch: int = 500) -> None:
        self._fetch = fetch
        self.max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        """The value stored under ``key``, or None; raises what the read raised."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await future

    async def _read(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[: self.max_batch]
                waiters = {key: self._waiting.pop(key) for key in keys}
                try:
                    found = await self._fetch(keys)
                except Exception as exc:
                    for futures in waiters.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in waiters.items():
                    for future in futures:
                        if not future.done():  # its caller may have given up
                            future.set_result(found.get(key))
        finally:
            self._reader = None
            # Cancelled (shutdown): nobody may wait for a read that will not come.
            for futures in self._waiting.values():
                for future in futures:
                    future.cancel()
            self._waiting.clear()
