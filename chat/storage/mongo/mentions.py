"""Mention records in MongoDB."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from pymongo.errors import (
    BulkWriteError,
)

from ..base import (
    MentionRepository,
)
from .documents import DUPLICATE_KEY, _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoMentions(MentionRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add_many(self, mentions: Collection[tuple[str, str, int]]) -> None:
        docs = [
            {"_id": f"{user_id}:{room_id}:{seq}", "user_id": user_id, "room_id": room_id, "seq": seq}
            for room_id, user_id, seq in mentions
        ]
        if not docs:
            return
        with _translate_errors():
            try:
                await self._storage.db.mentions.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                # Recorded before (a resend): those are kept once; anything else is an error.
                if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                    raise

    async def counts(self, user_id: str, read_seqs: Mapping[str, int]) -> dict[str, int]:
        if not read_seqs:
            return {}
        counted: dict[str, int] = {}
        with _translate_errors():
            async for doc in self._storage.db.mentions.find({"user_id": user_id}, {"room_id": 1, "seq": 1}):
                room_id = doc["room_id"]
                if room_id in read_seqs and doc["seq"] > read_seqs[room_id]:
                    counted[room_id] = counted.get(room_id, 0) + 1
        return counted

    async def clear(self, room_id: str, user_id: str, up_to_seq: int) -> None:
        with _translate_errors():
            await self._storage.db.mentions.delete_many(
                {"user_id": user_id, "room_id": room_id, "seq": {"$lte": up_to_seq}}
            )
