"""Bans in SQLite."""

from __future__ import annotations

from collections.abc import Collection

from ...models import (
    Ban,
    utcnow,
)
from ..base import (
    BanRepository,
)
from .database import _Database
from .rows import _ban, _to_ms


class SQLiteBans(BanRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, room_id: str, user_id: str, by_user_id: str) -> Ban:
        await self._db.execute(
            "INSERT INTO bans (room_id, user_id, by_user_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id, user_id) DO NOTHING",
            (room_id, user_id, by_user_id, _to_ms(utcnow())),
        )
        ban = await self.get(room_id, user_id)
        assert ban is not None
        return ban

    async def get(self, room_id: str, user_id: str) -> Ban | None:
        row = await self._db.fetchone("SELECT * FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        return _ban(row) if row else None

    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Ban]:
        pairs = list(keys)
        if not pairs:
            return {}
        where = " OR ".join(["(room_id = ? AND user_id = ?)"] * len(pairs))
        rows = await self._db.fetchall(f"SELECT * FROM bans WHERE {where}", tuple(v for pair in pairs for v in pair))
        return {(row["room_id"], row["user_id"]): _ban(row) for row in rows}

    async def remove(self, room_id: str, user_id: str) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id))
            return cursor.rowcount > 0
