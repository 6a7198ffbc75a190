"""The moderation log in SQLite."""

from __future__ import annotations

from ...models import (
    ModerationAction,
    ModerationEntry,
)
from ..base import (
    ModerationLog,
)
from .database import _Database
from .rows import _from_ms, _to_ms


class SQLiteModerationLog(ModerationLog):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, entry: ModerationEntry) -> None:
        await self._db.execute(
            "INSERT INTO moderation (room_id, actor_id, actor_username, action, target, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.room_id,
                entry.actor_id,
                entry.actor_username,
                entry.action.value,
                entry.target,
                entry.detail,
                _to_ms(entry.at),
            ),
        )

    async def list(self, room_id: str, limit: int = 100) -> list[ModerationEntry]:
        rows = await self._db.fetchall(
            "SELECT * FROM moderation WHERE room_id = ? ORDER BY at DESC, id DESC LIMIT ?", (room_id, limit)
        )
        return [
            ModerationEntry(
                row["room_id"],
                row["actor_id"],
                row["actor_username"],
                ModerationAction(row["action"]),
                row["target"],
                row["detail"],
                _from_ms(row["at"]),
            )
            for row in rows
        ]
