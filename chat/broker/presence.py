"""Who is online in each room, across every process.

Each process reports the users it has sockets for, per room, with an expiry
that its heartbeat keeps pushing forward. A process that dies stops
heartbeating and its users drop out when their entries expire, so nobody has
to clean up after a crash. Redis holds the shared view in a cluster; the
memory store serves a single process.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence

from ..models import OnlineUser


def unique_users(users: Iterable[OnlineUser]) -> list[OnlineUser]:
    """One entry per user (a user may be online through several processes), by name."""
    return sorted({user.id: user for user in users}.values())


class PresenceStore(abc.ABC):
    @abc.abstractmethod
    async def add(self, room_id: str, instance: str, user: OnlineUser, ttl: float) -> None:
        """Mark ``user`` online in the room through ``instance`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def remove(self, room_id: str, instance: str, user: OnlineUser) -> None: ...

    async def remove_many(self, instance: str, entries: Iterable[tuple[str, OnlineUser]]) -> None:
        """Take every ``(room_id, user)`` of ``instance`` off (a process going away)."""
        for room_id, user in entries:
            await self.remove(room_id, instance, user)

    @abc.abstractmethod
    async def refresh(self, instance: str, entries: Iterable[tuple[str, OnlineUser]], ttl: float) -> None:
        """Heartbeat: push the expiry of every ``(room_id, user)`` of this instance forward."""

    @abc.abstractmethod
    async def online(self, room_id: str) -> list[OnlineUser]:
        """Everyone online in the room now, once each, sorted by username."""

    async def online_in_each(self, room_ids: Sequence[str]) -> dict[str, list[OnlineUser]]:
        """:meth:`online` for each room, in as few round trips as the store allows."""
        return {room_id: await self.online(room_id) for room_id in room_ids}


class MemoryPresence(PresenceStore):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # room_id -> (instance, user) -> expiry
        self._rooms: dict[str, dict[tuple[str, OnlineUser], float]] = {}

    async def add(self, room_id: str, instance: str, user: OnlineUser, ttl: float) -> None:
        self._rooms.setdefault(room_id, {})[(instance, user)] = self._clock() + ttl

    async def remove(self, room_id: str, instance: str, user: OnlineUser) -> None:
        entries = self._rooms.get(room_id, {})
        entries.pop((instance, user), None)
        if not entries:
            self._rooms.pop(room_id, None)

    async def refresh(self, instance: str, entries: Iterable[tuple[str, OnlineUser]], ttl: float) -> None:
        for room_id, user in entries:
            await self.add(room_id, instance, user, ttl)

    async def online(self, room_id: str) -> list[OnlineUser]:
        now = self._clock()
        entries = self._rooms.get(room_id, {})
        for key in [key for key, expiry in entries.items() if expiry <= now]:
            del entries[key]
        return unique_users(user for _, user in entries)
