"""Mention records in SQLite (counted after a reader's marker, dropped once read)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..base import (
    MentionRepository,
)
from .database import _Database


class SQLiteMentions(MentionRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add_many(self, mentions: Collection[tuple[str, str, int]]) -> None:
        if not mentions:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO mentions (room_id, user_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", list(mentions)
            )

    async def counts(self, user_id: str, read_seqs: Mapping[str, int]) -> dict[str, int]:
        if not read_seqs:
            return {}
        rows = await self._db.fetchall("SELECT room_id, seq FROM mentions WHERE user_id = ?", (user_id,))
        counted: dict[str, int] = {}
        for row in rows:
            room_id = row["room_id"]
            if room_id in read_seqs and row["seq"] > read_seqs[room_id]:
                counted[room_id] = counted.get(room_id, 0) + 1
        return counted

    async def clear(self, room_id: str, user_id: str, up_to_seq: int) -> None:
        await self._db.execute(
            "DELETE FROM mentions WHERE user_id = ? AND room_id = ? AND seq <= ?", (user_id, room_id, up_to_seq)
        )
