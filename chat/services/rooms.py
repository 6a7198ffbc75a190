"""Creating, listing and finding rooms."""

from __future__ import annotations

from ..errors import Conflict, NotFound, ValidationError
from ..models import Room, User
from ..storage import Storage
from .limits import Action, Limiter

MAX_ROOM_NAME_LENGTH = 64


class Rooms:
    def __init__(self, storage: Storage, limiter: Limiter | None = None) -> None:
        self._storage = storage
        self._limiter = limiter

    async def create(self, name: str, creator: User) -> Room:
        name = " ".join(name.split())  # collapse runs of whitespace
        if not name:
            raise ValidationError("Give the room a name.", field="name")
        if len(name) > MAX_ROOM_NAME_LENGTH:
            raise ValidationError(f"Room names are at most {MAX_ROOM_NAME_LENGTH} characters.", field="name")
        if not name.isprintable():
            raise ValidationError("Room names cannot contain control characters.", field="name")
        if self._limiter is not None:
            await self._limiter.take(Action.ROOM_CREATION, creator.id)
        try:
            return await self._storage.rooms.add(name, creator)
        except Conflict:
            raise ValidationError("A room with that name exists already.", field="name") from None

    async def list(self) -> list[Room]:
        return await self._storage.rooms.list()

    async def get(self, room_id: str) -> Room:
        room = await self._storage.rooms.get(room_id)
        if room is None:
            raise NotFound(f"no room {room_id!r}")
        return room
