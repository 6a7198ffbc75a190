"""Bans in MongoDB."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ...errors import Conflict, Unavailable
from ...models import (
    Ban,
    utcnow,
)
from ..base import (
    BanRepository,
)
from .documents import _ban, _pair_id, _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoBans(BanRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, room_id: str, user_id: str, by_user_id: str) -> Ban:
        ban = Ban(room_id, user_id, by_user_id, utcnow())
        try:
            await self._storage.insert(
                "bans",
                {
                    "_id": _pair_id(room_id, user_id),
                    "room_id": room_id,
                    "user_id": user_id,
                    "by": by_user_id,
                    "at": ban.at,
                },
                conflict="banned already",
            )
        except Conflict:
            existing = await self.get(room_id, user_id)
            if existing is not None:
                return existing
            raise Unavailable("a ban was lifted while being added; retry") from None
        return ban

    async def get(self, room_id: str, user_id: str) -> Ban | None:
        doc = await self._storage.find_one("bans", {"_id": _pair_id(room_id, user_id)})
        return _ban(doc) if doc else None

    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Ban]:
        ids = [_pair_id(room_id, user_id) for room_id, user_id in keys]
        found = [_ban(doc) for doc in await self._storage.find_by_ids("bans", ids)]
        return {(ban.room_id, ban.user_id): ban for ban in found}

    async def remove(self, room_id: str, user_id: str) -> bool:
        with _translate_errors():
            result = await self._storage.db.bans.delete_one({"_id": _pair_id(room_id, user_id)})
        return bool(result.deleted_count)
