"""Rooms in SQLite: names unique among public rooms and DMs, archive, delete with everything in them."""

from __future__ import annotations

import datetime
from collections.abc import Collection

from ...errors import Conflict
from ...models import (
    Room,
    RoomKind,
    User,
)
from ..base import (
    ROOM_CONTENTS,
    RoomRepository,
    new_room,
)
from .database import _Database
from .rows import _room, _to_ms


class SQLiteRooms(RoomRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        room = new_room(name, creator, kind)
        await self._db.insert(
            "INSERT INTO rooms (id, name, name_lower, creator_id, creator_username, created_at, last_seq, kind)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (room.id, name, name.lower(), creator.id, creator.username, _to_ms(room.created_at), kind.value),
            conflict=f"a room named {name!r} exists already",
        )
        return room

    async def get(self, room_id: str) -> Room | None:
        row = await self._db.fetchone("SELECT * FROM rooms WHERE id = ?", (room_id,))
        return _room(row) if row else None

    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        return {row["id"]: _room(row) for row in await self._db.rows_by_id("rooms", room_ids)}

    async def get_by_name(self, name: str) -> Room | None:
        # The very condition of rooms_unique_names, so that SQLite looks the name up in it.
        row = await self._db.fetchone("SELECT * FROM rooms WHERE name_lower = ? AND kind <> 'private'", (name.lower(),))
        return _room(row) if row else None

    async def named(self, name: str) -> list[Room]:
        rows = await self._db.fetchall(
            "SELECT * FROM rooms WHERE name_lower = ? ORDER BY created_at, id", (name.lower(),)
        )
        return [_room(row) for row in rows]

    async def list(self, search: str = "", limit: int = 10_000, offset: int = 0) -> list[Room]:
        # LIKE with its wildcards escaped: the search is a plain substring.
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._db.fetchall(
            "SELECT * FROM rooms WHERE kind = ? AND name_lower LIKE ? ESCAPE '\\'"
            " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (RoomKind.PUBLIC.value, pattern, limit, offset),
        )
        return [_room(row) for row in rows]

    async def update(self, room_id: str, *, name: str | None = None, topic: str | None = None) -> Room | None:
        changes: list[tuple[str, object]] = []
        if name is not None:
            changes += [("name", name), ("name_lower", name.lower())]
        if topic is not None:
            changes.append(("topic", topic))
        if changes:
            try:
                await self._db.execute(
                    f"UPDATE rooms SET {', '.join(f'{column} = ?' for column, _ in changes)} WHERE id = ?",
                    (*(value for _, value in changes), room_id),
                )
            except Conflict:
                raise Conflict(f"a room named {name!r} exists already") from None
        return await self.get(room_id)

    async def set_archived(self, room_id: str, archived_at: datetime.datetime | None) -> Room | None:
        at = _to_ms(archived_at) if archived_at is not None else None
        await self._db.execute("UPDATE rooms SET archived_at = ? WHERE id = ?", (at, room_id))
        return await self.get(room_id)

    async def delete(self, room_id: str) -> bool:
        # One transaction: the room and its contents go together, or not at all.
        async with self._db.transaction() as conn:
            for table in ROOM_CONTENTS:
                await conn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            cursor = await conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,))
            return cursor.rowcount > 0

    async def count(self) -> int:
        return await self._db.count("SELECT COUNT(*) FROM rooms")
