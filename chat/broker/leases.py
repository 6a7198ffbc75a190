"""Counted places with an expiry: how many sockets a user or an address holds, across processes.

A lease names its pool (``user:<id>``, ``ip:<address>``) and its holder (one
socket of one process). A process renews its leases on a heartbeat, so the
places held by a process that died free themselves when their leases expire;
nobody has to clean up after a crash. Redis holds the shared pools in a group
(see :class:`chat.broker.redis.RedisLeases`); this module's memory store serves
one process.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable


class LeaseStore(abc.ABC):
    @abc.abstractmethod
    async def acquire(self, pool: str, holder: str, limit: int, ttl: float) -> bool:
        """Take a place in ``pool`` for ``holder`` for ``ttl`` seconds, unless ``limit`` are held."""

    @abc.abstractmethod
    async def release(self, pool: str, holder: str) -> None: ...

    async def release_many(self, leases: Iterable[tuple[str, str]]) -> None:
        """Give back every ``(pool, holder)`` (a process going away)."""
        for pool, holder in leases:
            await self.release(pool, holder)

    @abc.abstractmethod
    async def renew(self, leases: Iterable[tuple[str, str]], ttl: float) -> None:
        """Heartbeat: push the expiry of every ``(pool, holder)`` forward."""

    @abc.abstractmethod
    async def count(self, pool: str) -> int:
        """Places held now."""


class MemoryLeases(LeaseStore):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pools: dict[str, dict[str, float]] = {}  # pool -> holder -> expiry

    def _live(self, pool: str) -> dict[str, float]:
        holders = self._pools.get(pool, {})
        now = self._clock()
        for holder in [h for h, expiry in holders.items() if expiry <= now]:
            del holders[holder]
        return holders

    async def acquire(self, pool: str, holder: str, limit: int, ttl: float) -> bool:
        holders = self._live(pool)
        if holder not in holders and len(holders) >= limit:
            return False
        self._pools.setdefault(pool, holders)[holder] = self._clock() + ttl
        return True

    async def release(self, pool: str, holder: str) -> None:
        holders = self._pools.get(pool, {})
        holders.pop(holder, None)
        if not holders:
            self._pools.pop(pool, None)

    async def renew(self, leases: Iterable[tuple[str, str]], ttl: float) -> None:
        expiry = self._clock() + ttl
        for pool, holder in leases:
            self._pools.setdefault(pool, {})[holder] = expiry

    async def count(self, pool: str) -> int:
        return len(self._live(pool))
