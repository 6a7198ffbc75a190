"""Users in MongoDB."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ...models import (
    User,
    new_id,
    utcnow,
)
from ..base import (
    UserRepository,
)
from .documents import _translate_errors, _user

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoUsers(UserRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, username: str, password_hash: bytes) -> User:
        user = User(id=new_id(), username=username, password_hash=password_hash, created_at=utcnow())
        await self._storage.insert(
            "users",
            {
                "_id": user.id,
                "username": username,
                "username_lower": username.lower(),
                "password_hash": password_hash,
                "created_at": user.created_at,
            },
            conflict=f"username {username!r} is taken",
        )
        return user

    async def get(self, user_id: str) -> User | None:
        doc = await self._storage.find_one("users", {"_id": user_id})
        return _user(doc) if doc else None

    async def get_many(self, user_ids: Collection[str]) -> dict[str, User]:
        return {doc["_id"]: _user(doc) for doc in await self._storage.find_by_ids("users", list(user_ids))}

    async def get_by_username(self, username: str) -> User | None:
        doc = await self._storage.find_one("users", {"username_lower": username.lower()})
        return _user(doc) if doc else None

    async def set_password(self, user_id: str, password_hash: bytes) -> None:
        with _translate_errors():
            await self._storage.db.users.update_one({"_id": user_id}, {"$set": {"password_hash": password_hash}})

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        with _translate_errors():
            await self._storage.db.users.update_one({"_id": user_id}, {"$set": {"disabled": disabled}})

    async def set_admin(self, user_id: str, admin: bool) -> None:
        with _translate_errors():
            await self._storage.db.users.update_one({"_id": user_id}, {"$set": {"admin": admin}})

    async def count(self) -> int:
        return await self._storage.count("users", {})
