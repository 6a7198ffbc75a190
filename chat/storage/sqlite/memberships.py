"""Memberships and read markers in SQLite."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ...models import (
    Membership,
    Role,
    User,
    utcnow,
)
from ..base import (
    MembershipRepository,
)
from .database import _Database
from .rows import _membership, _to_ms


class SQLiteMemberships(MembershipRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, room_id: str, user: User, role: Role = Role.MEMBER) -> Membership:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO memberships (room_id, user_id, username, role, joined_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (room_id, user_id) DO NOTHING",
                (room_id, user.id, user.username, role.value, _to_ms(utcnow())),
            )
            async with conn.execute(
                "SELECT * FROM memberships WHERE room_id = ? AND user_id = ?", (room_id, user.id)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None  # inserted or there already, in this transaction
        return _membership(row)

    async def get(self, room_id: str, user_id: str) -> Membership | None:
        row = await self._db.fetchone("SELECT * FROM memberships WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        return _membership(row) if row else None

    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Membership]:
        pairs = list(keys)
        if not pairs:
            return {}
        where = " OR ".join(["(room_id = ? AND user_id = ?)"] * len(pairs))
        rows = await self._db.fetchall(
            f"SELECT * FROM memberships WHERE {where}", tuple(v for pair in pairs for v in pair)
        )
        return {(row["room_id"], row["user_id"]): _membership(row) for row in rows}

    async def set_role(self, room_id: str, user_id: str, role: Role) -> Membership | None:
        await self._db.execute(
            "UPDATE memberships SET role = ? WHERE room_id = ? AND user_id = ?", (role.value, room_id, user_id)
        )
        return await self.get(room_id, user_id)

    async def remove(self, room_id: str, user_id: str) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM memberships WHERE room_id = ? AND user_id = ?", (room_id, user_id))
            return cursor.rowcount > 0

    async def mark_read(self, room_id: str, user_id: str, seq: int) -> int | None:
        async with (
            self._db.transaction() as conn,
            conn.execute(
                "UPDATE memberships SET read_seq = MAX(read_seq, ?) WHERE room_id = ? AND user_id = ?"
                " RETURNING read_seq",
                (seq, room_id, user_id),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return row[0] if row else None

    async def advance_read_many(self, markers: Mapping[tuple[str, str], int]) -> None:
        if not markers:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                "UPDATE memberships SET read_seq = MAX(read_seq, ?) WHERE room_id = ? AND user_id = ?",
                [(seq, room_id, user_id) for (room_id, user_id), seq in markers.items()],
            )

    async def rooms_of(self, user_id: str) -> list[Membership]:
        rows = await self._db.fetchall(
            "SELECT * FROM memberships WHERE user_id = ? ORDER BY joined_at, room_id", (user_id,)
        )
        return [_membership(row) for row in rows]

    async def members_of(self, room_id: str, limit: int = 1000) -> list[Membership]:
        rows = await self._db.fetchall(
            "SELECT * FROM memberships WHERE room_id = ? ORDER BY joined_at, user_id LIMIT ?", (room_id, limit)
        )
        return [_membership(row) for row in rows]

    async def counts(self, room_ids: Collection[str]) -> dict[str, int]:
        ids = list(room_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(
            f"SELECT room_id, COUNT(*) AS n FROM memberships WHERE room_id IN ({marks}) GROUP BY room_id", tuple(ids)
        )
        return {row["room_id"]: row["n"] for row in rows}
