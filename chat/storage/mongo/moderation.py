"""The moderation log in MongoDB."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymongo import DESCENDING

from ...models import (
    ModerationAction,
    ModerationEntry,
    new_id,
)
from ..base import (
    ModerationLog,
)
from .documents import _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoModerationLog(ModerationLog):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, entry: ModerationEntry) -> None:
        await self._storage.insert(
            "moderation",
            {
                "_id": new_id(),
                "room_id": entry.room_id,
                "actor_id": entry.actor_id,
                "actor_username": entry.actor_username,
                "action": entry.action.value,
                "target": entry.target,
                "detail": entry.detail,
                "at": entry.at,
            },
            conflict="a moderation entry with this id exists",
        )

    async def list(self, room_id: str, limit: int = 100) -> list[ModerationEntry]:
        with _translate_errors():
            cursor = (
                self._storage.db.moderation.find({"room_id": room_id})
                .sort([("at", DESCENDING), ("_id", DESCENDING)])
                .limit(limit)
            )
            return [
                ModerationEntry(
                    doc["room_id"],
                    doc["actor_id"],
                    doc["actor_username"],
                    ModerationAction(doc["action"]),
                    doc["target"],
                    doc["detail"],
                    doc["at"],
                )
                async for doc in cursor
            ]
