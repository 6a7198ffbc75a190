"""Creating, listing and finding rooms."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cachetools import TTLCache

from ...errors import Conflict, NotFound, ValidationError
from ...events import EventBus, RoomsChanged
from ...models import Role, Room, RoomKind, User
from ...storage import Storage
from ...wire.actions import Action
from ..batching import batched_reads
from ..limits import Limiter

MAX_ROOM_NAME_LENGTH = 64
MAX_TOPIC_LENGTH = 200
# A room found is remembered this long, so that a storm of handshakes into a
# room does not read it once per socket. A rename or a new topic is
# announced to every process, which forgets the room (chat.services.rooms.moderation).
ROOM_CACHE_SECONDS = 60.0
ROOMS_PER_PAGE = 50
ROOM_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class RoomListing:
    rooms: list[Room]
    members: dict[str, int]  # by room id
    search: str
    page: int
    has_next: bool


def clean_room_name(name: str) -> str:
    """Collapse whitespace and check a room name; raise ValidationError."""
    name = " ".join(name.split())
    if not name:
        raise ValidationError("Give the room a name.", field="name")
    if len(name) > MAX_ROOM_NAME_LENGTH:
        raise ValidationError(f"Room names are at most {MAX_ROOM_NAME_LENGTH} characters.", field="name")
    if not name.isprintable():
        raise ValidationError("Room names cannot contain control characters.", field="name")
    if name.lower().startswith("dm:"):  # reserved for direct conversations (chat.services.rooms.membership)
        raise ValidationError("Room names cannot start with “dm:”.", field="name")
    return name


def clean_topic(topic: str) -> str:
    topic = " ".join(topic.split())
    if len(topic) > MAX_TOPIC_LENGTH:
        raise ValidationError(f"A topic is at most {MAX_TOPIC_LENGTH} characters.", field="topic")
    if not topic.isprintable():
        raise ValidationError("A topic cannot contain control characters.", field="topic")
    return topic


class Rooms:
    def __init__(
        self,
        storage: Storage,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        events: EventBus | None = None,
    ) -> None:
        self._storage = storage
        self._limiter = limiter
        self._events = events or EventBus()
        self._found: TTLCache[str, Room] = TTLCache(ROOM_CACHE_SIZE, ROOM_CACHE_SECONDS, timer=clock)
        # Rooms not remembered: asked for together (a storm of sockets coming
        # back after a restart), read together.
        self._reads = batched_reads(lambda ids: self._storage.rooms.get_many(ids), name="room look-ups")

    async def create(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        """Make a public or private room; its creator is its owner (and first member)."""
        if kind is RoomKind.DIRECT:
            raise ValidationError("Direct conversations are made by /dm/{username}.", field="name")
        name = clean_room_name(name)
        if self._limiter is not None:
            await self._limiter.take(Action.ROOM_CREATION, creator.id)
        try:
            room = await self._storage.rooms.add(name, creator, kind)
        except Conflict:
            # Only ever a public room's name: a private room's is reserved against nobody (storage's
            # RoomRepository.add), or this answer would tell an outsider it exists.
            raise ValidationError("A room with that name exists already.", field="name") from None
        await self._storage.memberships.add(room.id, creator, Role.OWNER)
        await self._events.publish(RoomsChanged(creator.id))  # the creator's other pages list it too
        return room

    async def listing(self, search: str = "", page: int = 1) -> RoomListing:
        """One page of the public rooms whose names contain ``search``, with their member counts."""
        search = " ".join(search.split())[:MAX_ROOM_NAME_LENGTH]
        page = max(1, page)
        found = await self._storage.rooms.list(search, ROOMS_PER_PAGE + 1, (page - 1) * ROOMS_PER_PAGE)
        rooms = found[:ROOMS_PER_PAGE]
        members = await self._storage.memberships.counts([room.id for room in rooms])
        return RoomListing(rooms, members, search, page, has_next=len(found) > ROOMS_PER_PAGE)

    def forget(self, room_id: str) -> None:
        """The room changed: read it again next time."""
        self._found.pop(room_id, None)

    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        """The rooms among ``room_ids`` that exist, by id: the ones not remembered in one read."""
        found = {room_id: room for room_id in room_ids if (room := self._found.get(room_id)) is not None}
        missing = [room_id for room_id in room_ids if room_id not in found]
        if missing:
            read = await self._storage.rooms.get_many(missing)
            for room_id, room in read.items():
                self._found[room_id] = room
            found.update(read)
        return found

    async def get(self, room_id: str) -> Room:
        room = self._found.get(room_id)
        if room is not None:
            return room
        # A room not found is not remembered: it may be created a moment later.
        room = await self._reads.outcome(room_id, room_id)
        if room is None:
            raise NotFound(f"no room {room_id!r}")
        self._found[room_id] = room
        return room
