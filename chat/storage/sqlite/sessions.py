"""Sessions in SQLite: live ones read in bulk, idle ends written in batches."""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping

from ...models import (
    Session,
    utcnow,
)
from ..base import (
    SessionRepository,
    new_session,
)
from .database import _Database
from .rows import _LIVE, _session, _to_ms


class SQLiteSessions(SessionRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(
        self,
        session_id: str,
        user_id: str,
        expires_at: datetime.datetime,
        idle_expires_at: datetime.datetime | None = None,
    ) -> Session:
        session = new_session(session_id, user_id, expires_at, idle_expires_at)
        await self._db.insert(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, idle_expires_at) VALUES (?, ?, ?, ?, ?)",
            (
                session.id,
                user_id,
                _to_ms(session.created_at),
                _to_ms(expires_at),
                _to_ms(session.idle_expires_at),
            ),
            conflict=f"session {session_id!r} exists already",
        )
        return session

    async def get(self, session_id: str) -> Session | None:
        now = _to_ms(utcnow())
        row = await self._db.fetchone(f"SELECT * FROM sessions WHERE id = ? AND {_LIVE}", (session_id, now, now))
        return _session(row) if row else None

    async def get_many(self, session_ids: Collection[str]) -> dict[str, Session]:
        ids = list(session_ids)
        if not ids:
            return {}
        now = _to_ms(utcnow())
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(f"SELECT * FROM sessions WHERE id IN ({marks}) AND {_LIVE}", (*ids, now, now))
        return {row["id"]: _session(row) for row in rows}

    async def live(self, session_ids: Collection[str]) -> set[str]:
        ids = list(session_ids)
        if not ids:
            return set()
        now = _to_ms(utcnow())
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(f"SELECT id FROM sessions WHERE id IN ({marks}) AND {_LIVE}", (*ids, now, now))
        return {row["id"] for row in rows}

    async def touch(self, session_id: str, idle_expires_at: datetime.datetime) -> None:
        await self._db.execute(
            "UPDATE sessions SET idle_expires_at = MIN(?, expires_at) WHERE id = ?",
            (_to_ms(idle_expires_at), session_id),
        )

    async def touch_many(self, idle_ends: Mapping[str, datetime.datetime]) -> None:
        if not idle_ends:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                "UPDATE sessions SET idle_expires_at = MAX(idle_expires_at, MIN(?, expires_at)) WHERE id = ?",
                [(_to_ms(idle), session_id) for session_id, idle in idle_ends.items()],
            )

    async def delete(self, session_id: str) -> None:
        await self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    async def delete_for_user(self, user_id: str, keep: str | None = None) -> list[str]:
        async with (
            self._db.transaction() as conn,
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND id != ? RETURNING id", (user_id, keep or "")
            ) as cursor,
        ):
            return [row[0] for row in await cursor.fetchall()]

    async def purge_expired(self) -> int:
        now = _to_ms(utcnow())
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM sessions WHERE expires_at <= ? OR (idle_expires_at <= ? AND idle_expires_at != 0)",
                (now, now),
            )
            return cursor.rowcount

    async def list_live(self, user_id: str | None = None, limit: int = 1000) -> list[Session]:
        now = _to_ms(utcnow())
        whose, params = ("AND user_id = ?", (user_id,)) if user_id is not None else ("", ())
        rows = await self._db.fetchall(
            f"SELECT * FROM sessions WHERE {_LIVE} {whose} ORDER BY created_at DESC, id LIMIT ?",
            (now, now, *params, limit),
        )
        return [_session(row) for row in rows]

    async def count_live(self) -> int:
        now = _to_ms(utcnow())
        return await self._db.count(f"SELECT COUNT(*) FROM sessions WHERE {_LIVE}", (now, now))
