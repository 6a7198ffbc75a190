"""Rooms in MongoDB: a name key unique among public rooms and DMs (FerretDB has no partial indexes), archive, delete."""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import (
    OperationFailure,
)

from ...errors import Conflict
from ...models import (
    Room,
    RoomKind,
    User,
    utcnow,
)
from ..base import (
    ROOM_CONTENTS,
    RoomRepository,
    new_room,
)
from .closings import note_closing
from .documents import _name_key, _room, _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoRooms(RoomRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        room = new_room(name, creator, kind)
        await self._storage.insert(
            "rooms",
            {
                "_id": room.id,
                "name": name,
                "name_lower": name.lower(),
                "name_key": _name_key(name, kind, room.id),
                "creator_id": creator.id,
                "creator_username": creator.username,
                "created_at": room.created_at,
                "last_seq": 0,
                "last_rev": 0,
                "kind": kind.value,
                "topic": "",
            },
            conflict=f"a room named {name!r} exists already",
        )
        return room

    async def get(self, room_id: str) -> Room | None:
        doc = await self._storage.find_one("rooms", {"_id": room_id})
        return _room(doc) if doc else None

    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        return {doc["_id"]: _room(doc) for doc in await self._storage.find_by_ids("rooms", list(room_ids))}

    async def get_by_name(self, name: str) -> Room | None:
        # A private room's key is no name: it is not found.
        doc = await self._storage.find_one("rooms", {"name_key": name.lower()})
        return _room(doc) if doc else None

    async def named(self, name: str) -> list[Room]:
        with _translate_errors():
            cursor = self._storage.db.rooms.find({"name_lower": name.lower()}).sort(
                [("created_at", ASCENDING), ("_id", ASCENDING)]
            )
            return [_room(doc) async for doc in cursor]

    async def list(self, search: str = "", limit: int = 10_000, offset: int = 0) -> list[Room]:
        # Rooms made before kinds existed have none: they are public.
        listed: dict[str, Any] = {"kind": {"$nin": [RoomKind.PRIVATE.value, RoomKind.DIRECT.value]}}
        if search:
            listed["name_lower"] = {"$regex": re.escape(search.lower())}
        with _translate_errors():
            cursor = (
                self._storage.db.rooms.find(listed)
                .sort([("created_at", DESCENDING), ("_id", ASCENDING)])
                .skip(offset)
                .limit(limit)
            )
            return [_room(doc) async for doc in cursor]

    async def update(self, room_id: str, *, name: str | None = None, topic: str | None = None) -> Room | None:
        changes: dict[str, Any] = {}
        if topic is not None:
            changes["topic"] = topic
        taken = Conflict(f"a room named {name!r} exists already")
        if name is not None:
            # The key depends on the room's kind, which a rename keeps.
            room = await self.get(room_id)
            if room is None:
                return None
            key = _name_key(name, room.kind, room_id)
            changes.update(name=name, name_lower=name.lower(), name_key=key)
            if await self._storage.find_one("rooms", {"name_key": key, "_id": {"$ne": room_id}}) is not None:
                raise taken
        if changes:
            try:
                with _translate_errors():
                    await self._storage.db.rooms.update_one({"_id": room_id}, {"$set": changes})
            except Conflict:
                raise taken from None
            except OperationFailure as exc:
                # FerretDB v1 reports a unique index refusing an update as an
                # InternalError naming the constraint, not as error 11000.
                if "UNIQUE constraint failed" in str(exc):
                    raise taken from None
                raise
        return await self.get(room_id)

    async def set_archived(self, room_id: str, archived_at: datetime.datetime | None) -> Room | None:
        change = {"$set": {"archived_at": archived_at}} if archived_at is not None else {"$unset": {"archived_at": ""}}
        with _translate_errors():
            await self._storage.db.rooms.update_one({"_id": room_id}, change)
            await note_closing(self._storage.db)
        return await self.get(room_id)

    async def delete(self, room_id: str) -> bool:
        # No transactions (FerretDB v1): archived first, so no message lands
        # while the contents go, and the room's document last, so a deletion
        # cut short is found and finished by the next one.
        db = self._storage.db
        with _translate_errors():
            found = await db.rooms.update_one({"_id": room_id}, {"$set": {"archived_at": utcnow()}})
            if not found.matched_count:
                return False
            await note_closing(db)
            for collection in ROOM_CONTENTS:
                await db[collection].delete_many({"room_id": room_id})
            await db.rooms.delete_one({"_id": room_id})
        return True

    async def count(self) -> int:
        return await self._storage.count("rooms", {})
