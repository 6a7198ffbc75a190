"""The MongoDB backend as a whole.

The client, its write concern and timeouts, the indexes, and its repositories, built from its URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import (
    OperationFailure,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri

from ...errors import Conflict, Unavailable
from ...models import (
    RoomKind,
)
from ..base import (
    Storage,
)
from .bans import MongoBans
from .documents import INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND, _name_key, _translate_errors
from .memberships import MongoMemberships
from .mentions import MongoMentions
from .messages import MongoMessages
from .moderation import MongoModerationLog
from .rooms import MongoRooms
from .sessions import MongoSessions
from .users import MongoUsers

# How long an operation waits for a reachable server before the caller gets
# Unavailable. PyMongo's default is 30 s, far too long for someone pressing
# "send"; a URL may still set its own.
DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}


# An ack promises the message survives a crash: by default every write waits
# for a majority of the replica set, journaled. A URL's own w= / journal=
# options win (w=1 trades that promise for latency; see README).
DEFAULT_WRITE_CONCERN = {"w": "majority", "journal": True}


# Up to this many documents asked for by id are read one query each (see find_by_ids).
FIND_ONE_BY_ONE_AT_MOST = 16


class MongoStorage(Storage):
    def __init__(self, url: str, database: str, client_options: Mapping[str, Any]) -> None:
        self.url = url
        self.database_name = database
        self._client_options = dict(client_options)
        self._indexed = False
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self.users = MongoUsers(self)
        self.sessions = MongoSessions(self)
        self.rooms = MongoRooms(self)
        self.messages = MongoMessages(self)
        self.memberships = MongoMemberships(self)
        self.bans = MongoBans(self)
        self.moderation = MongoModerationLog(self)
        self.mentions = MongoMentions(self)

    @classmethod
    def from_url(cls, url: str) -> MongoStorage:
        parsed = parse_uri(url)
        given = parsed["options"]  # a case-insensitive mapping
        defaults = {
            key: value for key, value in {**DEFAULT_TIMEOUTS_MS, **DEFAULT_WRITE_CONCERN}.items() if key not in given
        }
        return cls(url, parsed.get("database") or "chat", defaults)

    @property
    def db(self) -> Any:
        # Until the unique indexes exist nothing may be written: they are
        # what keeps seqs and client_ids from being stored twice.
        if self._client is None or not self._indexed:
            raise Unavailable("MongoDB storage is not connected")
        return self._client[self.database_name]

    async def insert(self, collection: str, document: Mapping[str, Any], conflict: str) -> None:
        """Insert one document; a unique-key clash raises Conflict(conflict)."""
        try:
            with _translate_errors():
                await self.db[collection].insert_one(document)
        except Conflict:
            raise Conflict(conflict) from None

    async def count(self, collection: str, query: Mapping[str, Any]) -> int:
        with _translate_errors():
            return int(await self.db[collection].count_documents(query))

    async def find_one(
        self, collection: str, query: Mapping[str, Any], fields: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        with _translate_errors():
            doc: Mapping[str, Any] | None = await self.db[collection].find_one(query, fields)
        return doc

    async def find_by_ids(
        self,
        collection: str,
        ids: Sequence[str],
        query: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> list[Mapping[str, Any]]:
        """The documents of ``collection`` whose ``_id`` is in ``ids`` (and that match ``query``), with ``fields``.

        A few ids are read one by one, all at once; more in one ``$in``.
        MongoDB answers both from the ``_id`` index. FerretDB answers an
        equality on ``_id`` from its index (2 ms on PostgreSQL) but decodes
        the whole collection for an ``$in``, whatever its length: worth it for
        a storm's hundreds of ids, not for the two or three that arrive
        together on a normal day.
        """
        extra = dict(query or {})
        if len(ids) <= FIND_ONE_BY_ONE_AT_MOST:
            found = await asyncio.gather(*(self.find_one(collection, {"_id": one, **extra}, fields) for one in ids))
            return [doc for doc in found if doc is not None]
        with _translate_errors():
            return [doc async for doc in self.db[collection].find({"_id": {"$in": list(ids)}, **extra}, fields)]

    async def connect(self) -> None:
        if self._client is None:
            self._client = AsyncMongoClient(self.url, tz_aware=True, **self._client_options)
        if self._indexed:
            return
        db = self._client[self.database_name]
        with _translate_errors():
            await db.users.create_index("username_lower", unique=True, name="username_lower_unique")
            await self._key_room_names(db)
            # Sparse: a room stored by an earlier version (still running in a
            # rolling upgrade) has no key yet, and two such must not clash on
            # MongoDB (FerretDB v1 never indexes a missing field, and accepts
            # but ignores sparse).
            await db.rooms.create_index("name_key", unique=True, sparse=True, name="name_key_unique")
            await self._drop_index(db.rooms, "name_lower_unique")  # every name was unique: private ones too
            await db.rooms.create_index([("created_at", DESCENDING)], name="created_at")
            await db.messages.create_index(
                [("room_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq_unique"
            )
            await db.messages.create_index(
                [("room_id", ASCENDING), ("user_id", ASCENDING), ("client_id", ASCENDING)],
                unique=True,
                name="room_user_client_unique",
            )
            await db.messages.create_index([("room_id", ASCENDING), ("rev", ASCENDING)], name="room_rev")
            await db.memberships.create_index([("user_id", ASCENDING), ("joined_at", ASCENDING)], name="user_joined")
            await db.memberships.create_index([("room_id", ASCENDING), ("joined_at", ASCENDING)], name="room_joined")
            await db.rooms.create_index([("kind", ASCENDING), ("created_at", DESCENDING)], name="kind_created")
            await db.mentions.create_index([("user_id", ASCENDING), ("room_id", ASCENDING)], name="user_room")
            await db.moderation.create_index([("room_id", ASCENDING), ("at", DESCENDING)], name="room_at")
            await db.sessions.create_index("expires_at", name="expires_at")
            await db.sessions.create_index("user_id", name="user_id")
        self._indexed = True

    @staticmethod
    async def _key_room_names(db: Any) -> None:
        """Give rooms stored before ``name_key`` existed theirs: idempotent, and safe for two processes at once."""
        async for doc in db.rooms.find({"name_key": {"$exists": False}}, {"name": 1, "kind": 1}):
            key = _name_key(doc["name"], RoomKind(doc.get("kind", RoomKind.PUBLIC.value)), doc["_id"])
            # Only if still keyless: a process already upgraded may have renamed the room meanwhile.
            await db.rooms.update_one({"_id": doc["_id"], "name_key": {"$exists": False}}, {"$set": {"name_key": key}})

    @staticmethod
    async def _drop_index(collection: Any, name: str) -> None:
        """Drop the index if it is there (another process starting at once may have dropped it first)."""
        try:
            await collection.drop_index(name)
        except OperationFailure as exc:
            if exc.code not in {INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND}:
                raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._indexed = False

    async def ping(self) -> None:
        with _translate_errors():
            try:
                await self.db.command("ping")
            except PyMongoError as exc:
                raise Unavailable(f"MongoDB: {exc}") from exc
