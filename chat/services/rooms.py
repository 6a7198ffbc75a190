"""Creating, listing and finding rooms."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

from ..errors import Conflict, NotFound, ValidationError
from ..models import Role, Room, RoomKind, User
from ..storage import Storage
from .limits import Action, Limiter

MAX_ROOM_NAME_LENGTH = 64
# A room found is remembered this long, so that a storm of handshakes into a
# room does not read it once per socket. Rooms never change once created;
# whatever comes to change them (renames, private rooms) must also forget
# them on every process.
ROOM_CACHE_SECONDS = 60.0
ROOM_CACHE_SIZE = 10_000


class Rooms:
    def __init__(
        self, storage: Storage, limiter: Limiter | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._storage = storage
        self._limiter = limiter
        self._found: TTLCache[str, Room] = TTLCache(ROOM_CACHE_SIZE, ROOM_CACHE_SECONDS, timer=clock)

    async def create(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        """Make a public or private room; its creator is its owner (and first member)."""
        name = " ".join(name.split())  # collapse runs of whitespace
        if not name:
            raise ValidationError("Give the room a name.", field="name")
        if len(name) > MAX_ROOM_NAME_LENGTH:
            raise ValidationError(f"Room names are at most {MAX_ROOM_NAME_LENGTH} characters.", field="name")
        if not name.isprintable():
            raise ValidationError("Room names cannot contain control characters.", field="name")
        if name.lower().startswith("dm:") or kind is RoomKind.DIRECT:
            raise ValidationError("Room names cannot start with “dm:”.", field="name")
        if self._limiter is not None:
            await self._limiter.take(Action.ROOM_CREATION, creator.id)
        try:
            room = await self._storage.rooms.add(name, creator, kind)
        except Conflict:
            raise ValidationError("A room with that name exists already.", field="name") from None
        await self._storage.memberships.add(room.id, creator, Role.OWNER)
        return room

    async def list(self) -> list[Room]:
        return await self._storage.rooms.list()

    async def get(self, room_id: str) -> Room:
        room = self._found.get(room_id)
        if room is not None:
            return room
        # A room not found is not remembered: it may be created a moment later.
        room = await self._storage.rooms.get(room_id)
        if room is None:
            raise NotFound(f"no room {room_id!r}")
        self._found[room_id] = room
        return room
