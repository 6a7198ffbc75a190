"""Users in SQLite."""

from __future__ import annotations

from collections.abc import Collection

from ...models import (
    User,
    new_id,
    utcnow,
)
from ..base import (
    UserRepository,
)
from .database import _Database
from .rows import _to_ms, _user


class SQLiteUsers(UserRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, username: str, password_hash: bytes) -> User:
        user = User(id=new_id(), username=username, password_hash=password_hash, created_at=utcnow())
        await self._db.insert(
            "INSERT INTO users (id, username, username_lower, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (user.id, user.username, username.lower(), user.password_hash, _to_ms(user.created_at)),
            conflict=f"username {username!r} is taken",
        )
        return user

    async def get(self, user_id: str) -> User | None:
        row = await self._db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    async def get_many(self, user_ids: Collection[str]) -> dict[str, User]:
        return {row["id"]: _user(row) for row in await self._db.rows_by_id("users", user_ids)}

    async def get_by_username(self, username: str) -> User | None:
        row = await self._db.fetchone("SELECT * FROM users WHERE username_lower = ?", (username.lower(),))
        return _user(row) if row else None

    async def set_password(self, user_id: str, password_hash: bytes) -> None:
        await self._db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        await self._db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self._db.execute("UPDATE users SET admin = ? WHERE id = ?", (int(admin), user_id))

    async def count(self) -> int:
        return await self._db.count("SELECT COUNT(*) FROM users")
