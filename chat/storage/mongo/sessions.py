"""Sessions in MongoDB: live ones read in bulk, idle ends written in batches (no TTL index: FerretDB v1 has none)."""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from pymongo import ASCENDING, DESCENDING

from ...models import (
    Session,
    utcnow,
)
from ..base import (
    SessionRepository,
    new_session,
)
from .documents import _live, _session, _translate_errors

if TYPE_CHECKING:
    from .storage import MongoStorage


class MongoSessions(SessionRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(
        self,
        session_id: str,
        user_id: str,
        expires_at: datetime.datetime,
        idle_expires_at: datetime.datetime | None = None,
    ) -> Session:
        session = new_session(session_id, user_id, expires_at, idle_expires_at)
        await self._storage.insert(
            "sessions",
            {
                "_id": session_id,
                "user_id": user_id,
                "created_at": session.created_at,
                "expires_at": expires_at,
                "idle_expires_at": session.idle_expires_at,
            },
            conflict=f"session {session_id!r} exists already",
        )
        return session

    async def get(self, session_id: str) -> Session | None:
        doc = await self._storage.find_one("sessions", {"_id": session_id, **_live(utcnow())})
        return _session(doc) if doc else None

    async def get_many(self, session_ids: Collection[str]) -> dict[str, Session]:
        found = await self._storage.find_by_ids("sessions", list(session_ids), _live(utcnow()))
        return {doc["_id"]: _session(doc) for doc in found}

    async def live(self, session_ids: Collection[str]) -> set[str]:
        if not session_ids:
            return set()
        with _translate_errors():
            cursor = self._storage.db.sessions.find({"_id": {"$in": list(session_ids)}, **_live(utcnow())})
            return {doc["_id"] async for doc in cursor}

    async def touch(self, session_id: str, idle_expires_at: datetime.datetime) -> None:
        # The caller keeps idle_expires_at within expires_at (FerretDB v1 has
        # no pipeline updates to take the minimum here).
        with _translate_errors():
            await self._storage.db.sessions.update_one(
                {"_id": session_id}, {"$set": {"idle_expires_at": idle_expires_at}}
            )

    async def touch_many(self, idle_ends: Mapping[str, datetime.datetime]) -> None:
        # Whole seconds (never later than asked), so a storm's idle ends share
        # a few values: one update_many per value, each one pass over the
        # sessions, instead of one update per session. $max: never backwards.
        by_end: dict[datetime.datetime, list[str]] = {}
        for session_id, idle in idle_ends.items():
            by_end.setdefault(idle.replace(microsecond=0), []).append(session_id)
        with _translate_errors():
            for idle, ids in by_end.items():
                await self._storage.db.sessions.update_many({"_id": {"$in": ids}}, {"$max": {"idle_expires_at": idle}})

    async def delete(self, session_id: str) -> None:
        with _translate_errors():
            await self._storage.db.sessions.delete_one({"_id": session_id})

    async def delete_for_user(self, user_id: str, keep: str | None = None) -> list[str]:
        with _translate_errors():
            cursor = self._storage.db.sessions.find({"user_id": user_id, "_id": {"$ne": keep or ""}})
            ids = [doc["_id"] async for doc in cursor]
            if ids:
                await self._storage.db.sessions.delete_many({"_id": {"$in": ids}})
        return ids

    async def purge_expired(self) -> int:
        now = utcnow()
        with _translate_errors():
            result = await self._storage.db.sessions.delete_many(
                {"$or": [{"expires_at": {"$lte": now}}, {"idle_expires_at": {"$lte": now}}]}
            )
        return int(result.deleted_count)

    async def list_live(self, user_id: str | None = None, limit: int = 1000) -> list[Session]:
        query = _live(utcnow())
        if user_id is not None:
            query["user_id"] = user_id
        with _translate_errors():
            cursor = self._storage.db.sessions.find(query).sort([("created_at", DESCENDING), ("_id", ASCENDING)])
            return [_session(doc) async for doc in cursor.limit(limit)]

    async def count_live(self) -> int:
        return await self._storage.count("sessions", _live(utcnow()))
