"""Memberships and read markers in MongoDB."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from pymongo import ASCENDING, UpdateOne

from ...errors import Conflict, Unavailable
from ...models import (
    Membership,
    Role,
    User,
    utcnow,
)
from ..base import (
    MembershipRepository,
)
from .bulk import update_each
from .documents import _membership, _pair_id, _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoMemberships(MembershipRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, room_id: str, user: User, role: Role = Role.MEMBER) -> Membership:
        membership = Membership(room_id, user.id, user.username, role, utcnow())
        try:
            await self._storage.insert(
                "memberships",
                {
                    "_id": _pair_id(room_id, user.id),
                    "room_id": room_id,
                    "user_id": user.id,
                    "username": user.username,
                    "role": role.value,
                    "joined_at": membership.joined_at,
                },
                conflict="a member already",
            )
        except Conflict:
            existing = await self.get(room_id, user.id)
            if existing is not None:
                return existing
            raise Unavailable("a membership was removed while being added; retry") from None
        return membership

    async def get(self, room_id: str, user_id: str) -> Membership | None:
        doc = await self._storage.find_one("memberships", {"_id": _pair_id(room_id, user_id)})
        return _membership(doc) if doc else None

    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Membership]:
        ids = [_pair_id(room_id, user_id) for room_id, user_id in keys]
        found = [_membership(doc) for doc in await self._storage.find_by_ids("memberships", ids)]
        return {(m.room_id, m.user_id): m for m in found}

    async def set_role(self, room_id: str, user_id: str, role: Role) -> Membership | None:
        with _translate_errors():
            await self._storage.db.memberships.update_one(
                {"_id": _pair_id(room_id, user_id)}, {"$set": {"role": role.value}}
            )
        return await self.get(room_id, user_id)

    async def remove(self, room_id: str, user_id: str) -> bool:
        with _translate_errors():
            result = await self._storage.db.memberships.delete_one({"_id": _pair_id(room_id, user_id)})
        return bool(result.deleted_count)

    async def mark_read(self, room_id: str, user_id: str, seq: int) -> int | None:
        key = _pair_id(room_id, user_id)
        with _translate_errors():
            # Conditional, so a marker only ever moves forward, even when tabs race.
            await self._storage.db.memberships.update_one(
                {"_id": key, "read_seq": {"$not": {"$gte": seq}}}, {"$set": {"read_seq": seq}}
            )
        membership = await self.get(room_id, user_id)
        return membership.read_seq if membership else None

    async def advance_read_many(self, markers: Mapping[tuple[str, str], int]) -> None:
        if not markers:
            return
        updates = [
            # Conditional, as in mark_read: a marker only ever moves forward.
            UpdateOne(
                {"_id": _pair_id(room_id, user_id), "read_seq": {"$not": {"$gte": seq}}}, {"$set": {"read_seq": seq}}
            )
            for (room_id, user_id), seq in markers.items()
        ]
        with _translate_errors():
            await update_each(self._storage.db.memberships, updates)

    async def rooms_of(self, user_id: str) -> list[Membership]:
        with _translate_errors():
            cursor = self._storage.db.memberships.find({"user_id": user_id}).sort(
                [("joined_at", ASCENDING), ("room_id", ASCENDING)]
            )
            return [_membership(doc) async for doc in cursor]

    async def members_of(self, room_id: str, limit: int = 1000) -> list[Membership]:
        with _translate_errors():
            cursor = (
                self._storage.db.memberships.find({"room_id": room_id})
                .sort([("joined_at", ASCENDING), ("user_id", ASCENDING)])
                .limit(limit)
            )
            return [_membership(doc) async for doc in cursor]

    async def counts(self, room_ids: Collection[str]) -> dict[str, int]:
        ids = list(room_ids)
        if not ids:
            return {}
        with _translate_errors():
            cursor = await self._storage.db.memberships.aggregate(
                [{"$match": {"room_id": {"$in": ids}}}, {"$group": {"_id": "$room_id", "n": {"$sum": 1}}}]
            )
            return {doc["_id"]: int(doc["n"]) async for doc in cursor}
