"""Unread and mention counts, and the read markers that move them.

Each member has a read marker per room: the last seq they have seen, moved
forward by their client (``{"type": "read", "seq": N}``), never back. Seqs
have no holes, so a room's unread count is its seq counter minus the
reader's marker: no history is scanned. Mentions of the reader after the
marker are counted from the few mention records kept for them
(:class:`chat.storage.base.MentionRepository`), dropped as they are read.

A marker that moves is published (:class:`~chat.events.ReadMoved`) and
relayed to the reader's own channel, so every page they have open, on any
process, updates its badges (chat.services.realtime.userstream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from ...events import EventBus, ReadMoved
from ...models import Room, RoomKind, User
from ...storage import Storage
from ..conversation.messages import Messages
from .membership import DM_PREFIX, Memberships


@dataclass(frozen=True)
class Badge:
    """One room in a person's sidebar: what to call it and how much is new."""

    room: Room
    title: str
    last_seq: int
    read_seq: int
    mentions: int

    @property
    def unread(self) -> int:
        return max(0, self.last_seq - self.read_seq)

    def to_wire(self) -> dict[str, Any]:
        return {
            "room_id": self.room.id,
            "title": self.title,
            "kind": self.room.kind.value,
            "last_seq": self.last_seq,
            "read_seq": self.read_seq,
            "unread": self.unread,
            "mentions": self.mentions,
        }


class Unread:
    def __init__(self, storage: Storage, memberships: Memberships, messages: Messages, events: EventBus) -> None:
        self._storage = storage
        self._memberships = memberships
        self._messages = messages
        self._events = events
        # Usernames never change: DM titles need not be read twice.
        self._usernames: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=3600)

    async def badges(self, user: User) -> list[Badge]:
        """The rooms and DMs ``user`` belongs to, with their counts: a few queries, whatever the history."""
        joined = await self._memberships.rooms_of(user)
        if not joined:
            return []
        counters = await self._messages.counters([room.id for room, _ in joined])
        mentions = await self._storage.mentions.counts(user.id, {room.id: m.read_seq for room, m in joined})
        badges = []
        for room, membership in joined:
            counted = counters.get(room.id)
            badges.append(
                Badge(
                    room=room,
                    title=await self.title(room, user),
                    last_seq=counted.seq if counted else 0,
                    read_seq=membership.read_seq,
                    mentions=mentions.get(room.id, 0),
                )
            )
        return badges

    async def title(self, room: Room, reader: User) -> str:
        """A room's name; for a DM, the other person's username."""
        if room.kind is not RoomKind.DIRECT or not room.name.startswith(DM_PREFIX):
            return room.name
        ids = room.name[len(DM_PREFIX) :].split(":")
        other = next((user_id for user_id in ids if user_id != reader.id), reader.id)
        if other not in self._usernames:
            found = await self._storage.users.get(other)
            self._usernames[other] = found.username if found else "someone"
        return self._usernames[other]

    async def mark_read(self, user: User, room: Room, seq: int) -> int | None:
        """Move ``user``'s marker in ``room`` to ``seq`` (never back) and tell their other pages."""
        marker = await self._storage.memberships.mark_read(room.id, user.id, seq)
        if marker is None:
            return None  # reading a public room one has not joined: nothing to count
        await self._storage.mentions.clear(room.id, user.id, marker)
        # Mentions the marker did not reach yet still count (a reader who read only part of a burst).
        mentions = (await self._storage.mentions.counts(user.id, {room.id: marker})).get(room.id, 0)
        await self._events.publish(ReadMoved(user.id, room.id, marker, mentions))
        return marker
