"""The distributed backend: MongoDB through PyMongo's async API.

Uses only what both MongoDB and FerretDB v1 support (the tests run against
FerretDB): no transactions, change streams or TTL indexes. A message's seq
follows the highest one known to be stored and is written under the unique
``(room_id, seq)`` index (see :meth:`MongoMessages._insert_next`), so seqs
have no holes and never appear out of order, on MongoDB and FerretDB alike.

An ack is only sent once the write is acknowledged with the write concern
``w=majority, journal=true`` (unless the URL sets its own; see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import re
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri

from ..errors import Conflict, RoomArchived, RoomGone, Unavailable
from ..models import (
    Ban,
    Membership,
    Message,
    ModerationAction,
    ModerationEntry,
    NewMessage,
    Revision,
    Role,
    Room,
    RoomCounters,
    RoomKind,
    Session,
    User,
    new_id,
    utcnow,
)
from .base import (
    BanRepository,
    MembershipRepository,
    MentionRepository,
    MessageRepository,
    ModerationLog,
    RoomRepository,
    SessionRepository,
    Storage,
    UserRepository,
    room_of,
)

# How long an operation waits for a reachable server before the caller gets
# Unavailable. PyMongo's default is 30 s, far too long for someone pressing
# "send"; a URL may still set its own.
DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
# An ack promises the message survives a crash: by default every write waits
# for a majority of the replica set, journaled. A URL's own w= / journal=
# options win (w=1 trades that promise for latency; see README).
DEFAULT_WRITE_CONCERN = {"w": "majority", "journal": True}
# Attempts per message before giving up; more than one only when writers in
# several processes send to the same room at the same moment.
MAX_SEQ_ATTEMPTS = 50
# MongoDB's (and FerretDB's) error code for a unique index refusing a write.
DUPLICATE_KEY = 11000
# Dropping an index that is not there (another process dropped it first).
INDEX_NOT_FOUND = 27
NAMESPACE_NOT_FOUND = 26


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except DuplicateKeyError as exc:
        raise Conflict(str(exc)) from exc
    except ConnectionFailure as exc:
        # Covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError.
        raise Unavailable(f"MongoDB: {exc}") from exc
    except InvalidOperation as exc:
        # The client was closed under a write still in flight (shutting down).
        raise Unavailable(f"MongoDB: {exc}") from exc


def _user(doc: Mapping[str, Any]) -> User:
    return User(
        id=doc["_id"],
        username=doc["username"],
        password_hash=bytes(doc["password_hash"]),
        created_at=doc["created_at"],
        disabled=bool(doc.get("disabled", False)),
        admin=bool(doc.get("admin", False)),
    )


def _session(doc: Mapping[str, Any]) -> Session:
    return Session(
        id=doc["_id"],
        user_id=doc["user_id"],
        created_at=doc["created_at"],
        expires_at=doc["expires_at"],
        # Sessions stored before idle expiry existed end only at expires_at.
        idle_expires_at=doc.get("idle_expires_at", doc["expires_at"]),
    )


def _live(now: datetime.datetime) -> dict[str, Any]:
    """The query part that keeps only sessions whose both ends are ahead."""
    return {
        "expires_at": {"$gt": now},
        "$or": [{"idle_expires_at": {"$gt": now}}, {"idle_expires_at": {"$exists": False}}],
    }


def _room(doc: Mapping[str, Any]) -> Room:
    return Room(
        id=doc["_id"],
        name=doc["name"],
        creator_id=doc["creator_id"],
        creator_username=doc["creator_username"],
        created_at=doc["created_at"],
        last_seq=doc.get("last_seq", 0),
        kind=RoomKind(doc.get("kind", RoomKind.PUBLIC.value)),
        topic=doc.get("topic", ""),
        last_message_at=doc.get("last_message_at"),
        archived_at=doc.get("archived_at"),
    )


def _name_key(name: str, kind: RoomKind, room_id: str) -> str:
    """What a room holds in ``name_key``, the field its unique index is on (see RoomRepository.add).

    A public room or DM holds its name, lower-cased; a private room a key of
    its own, so that it reserves no name. FerretDB v1 has no partial indexes
    (``partialFilterExpression`` is not implemented), which would otherwise
    leave private rooms out of the index. The key is in upper case, which no
    lower-cased name contains, so it never clashes with a name.
    """
    return f"PRIVATE {room_id}" if kind is RoomKind.PRIVATE else name.lower()


def _membership(doc: Mapping[str, Any]) -> Membership:
    return Membership(
        room_id=doc["room_id"],
        user_id=doc["user_id"],
        username=doc["username"],
        role=Role(doc["role"]),
        joined_at=doc["joined_at"],
        read_seq=int(doc.get("read_seq", 0)),
    )


def _pair_id(room_id: str, user_id: str) -> str:
    """The ``_id`` of a (room, user) record: FerretDB finds by ``_id`` without a scan."""
    return f"{room_id}:{user_id}"


def message_id(new: NewMessage | Message) -> str:
    """The ``_id`` of a message: the same for every send of one client_id by one user in one room."""
    key = "\0".join((new.room_id, new.user_id, new.client_id))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


# Not archived: the field is absent (unarchiving removes it).
NOT_ARCHIVED = {"archived_at": {"$exists": False}}
# What a room holds besides its own document, deleted with it.
ROOM_CONTENTS = ("messages", "memberships", "bans", "mentions", "moderation")


def _document(message: Message) -> dict[str, Any]:
    return {
        "_id": message.id,
        "room_id": message.room_id,
        "seq": message.seq,
        "user_id": message.user_id,
        "username": message.username,
        "body": message.body,
        "created_at": message.created_at,
        "client_id": message.client_id,
        "html": message.html,
    }


def _message(doc: Mapping[str, Any]) -> Message:
    return Message(
        id=doc["_id"],
        room_id=doc["room_id"],
        seq=doc["seq"],
        user_id=doc["user_id"],
        username=doc["username"],
        body=doc["body"],
        created_at=doc["created_at"],
        client_id=doc["client_id"],
        edited_at=doc.get("edited_at"),
        deleted_at=doc.get("deleted_at"),
        rev=int(doc.get("rev", 0)),
        html=doc.get("html", ""),
    )


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
        session = Session(
            id=session_id,
            user_id=user_id,
            created_at=utcnow(),
            expires_at=expires_at,
            idle_expires_at=min(idle_expires_at or expires_at, expires_at),
        )
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
        ids = list(session_ids)
        if len(ids) <= 1:
            # One id by equality: FerretDB answers that far faster than an
            # $in of one (MongoDB uses the _id index for both).
            session = await self.get(ids[0]) if ids else None
            return {session.id: session} if session else {}
        with _translate_errors():
            cursor = self._storage.db.sessions.find({"_id": {"$in": ids}, **_live(utcnow())})
            return {doc["_id"]: _session(doc) async for doc in cursor}

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


class MongoRooms(RoomRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage

    async def add(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        room = Room(
            id=new_id(),
            name=name,
            creator_id=creator.id,
            creator_username=creator.username,
            created_at=utcnow(),
            kind=kind,
        )
        await self._storage.insert(
            "rooms",
            {
                "_id": room.id,
                "name": name,
                "name_lower": name.lower(),
                "name_key": _name_key(name, kind, room.id),
                "creator_id": creator.id,
                "creator_username": creator.username,
                "created_at": room.created_at,
                "last_seq": 0,
                "last_rev": 0,
                "kind": kind.value,
                "topic": "",
            },
            conflict=f"a room named {name!r} exists already",
        )
        return room

    async def get(self, room_id: str) -> Room | None:
        doc = await self._storage.find_one("rooms", {"_id": room_id})
        return _room(doc) if doc else None

    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        ids = list(room_ids)
        if not ids:
            return {}
        with _translate_errors():
            return {doc["_id"]: _room(doc) async for doc in self._storage.db.rooms.find({"_id": {"$in": ids}})}

    async def get_by_name(self, name: str) -> Room | None:
        # A private room's key is no name: it is not found.
        doc = await self._storage.find_one("rooms", {"name_key": name.lower()})
        return _room(doc) if doc else None

    async def named(self, name: str) -> list[Room]:
        with _translate_errors():
            cursor = self._storage.db.rooms.find({"name_lower": name.lower()}).sort(
                [("created_at", ASCENDING), ("_id", ASCENDING)]
            )
            return [_room(doc) async for doc in cursor]

    async def list(self, search: str = "", limit: int = 10_000, offset: int = 0) -> list[Room]:
        # Rooms made before kinds existed have none: they are public.
        listed: dict[str, Any] = {"kind": {"$nin": [RoomKind.PRIVATE.value, RoomKind.DIRECT.value]}}
        if search:
            listed["name_lower"] = {"$regex": re.escape(search.lower())}
        with _translate_errors():
            cursor = (
                self._storage.db.rooms.find(listed)
                .sort([("created_at", DESCENDING), ("_id", ASCENDING)])
                .skip(offset)
                .limit(limit)
            )
            return [_room(doc) async for doc in cursor]

    async def update(self, room_id: str, *, name: str | None = None, topic: str | None = None) -> Room | None:
        changes: dict[str, Any] = {}
        if topic is not None:
            changes["topic"] = topic
        taken = Conflict(f"a room named {name!r} exists already")
        if name is not None:
            # The key depends on the room's kind, which a rename keeps.
            room = await self.get(room_id)
            if room is None:
                return None
            key = _name_key(name, room.kind, room_id)
            changes.update(name=name, name_lower=name.lower(), name_key=key)
            if await self._storage.find_one("rooms", {"name_key": key, "_id": {"$ne": room_id}}) is not None:
                raise taken
        if changes:
            try:
                with _translate_errors():
                    await self._storage.db.rooms.update_one({"_id": room_id}, {"$set": changes})
            except Conflict:
                raise taken from None
            except OperationFailure as exc:
                # FerretDB v1 reports a unique index refusing an update as an
                # InternalError naming the constraint, not as error 11000.
                if "UNIQUE constraint failed" in str(exc):
                    raise taken from None
                raise
        return await self.get(room_id)

    async def set_archived(self, room_id: str, archived_at: datetime.datetime | None) -> Room | None:
        change = {"$set": {"archived_at": archived_at}} if archived_at is not None else {"$unset": {"archived_at": ""}}
        with _translate_errors():
            await self._storage.db.rooms.update_one({"_id": room_id}, change)
        return await self.get(room_id)

    async def delete(self, room_id: str) -> bool:
        # No transactions (FerretDB v1): archived first, so no message lands
        # while the contents go, and the room's document last, so a deletion
        # cut short is found and finished by the next one.
        db = self._storage.db
        with _translate_errors():
            found = await db.rooms.update_one({"_id": room_id}, {"$set": {"archived_at": utcnow()}})
            if not found.matched_count:
                return False
            for collection in ROOM_CONTENTS:
                await db[collection].delete_many({"room_id": room_id})
            await db.rooms.delete_one({"_id": room_id})
        return True

    async def count(self) -> int:
        return await self._storage.count("rooms", {})


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
        if not ids:
            return {}
        with _translate_errors():
            cursor = self._storage.db.memberships.find({"_id": {"$in": ids}})
            found = [_membership(doc) async for doc in cursor]
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
            await self._storage.db.memberships.bulk_write(updates, ordered=False)

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


def _ban(doc: Mapping[str, Any]) -> Ban:
    return Ban(doc["room_id"], doc["user_id"], doc["by"], doc["at"])


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
        if not ids:
            return {}
        with _translate_errors():
            found = [_ban(doc) async for doc in self._storage.db.bans.find({"_id": {"$in": ids}})]
        return {(ban.room_id, ban.user_id): ban for ban in found}

    async def remove(self, room_id: str, user_id: str) -> bool:
        with _translate_errors():
            result = await self._storage.db.bans.delete_one({"_id": _pair_id(room_id, user_id)})
        return bool(result.deleted_count)


class RoomWriters:
    """One writer per room in this process.

    Senders in the same room wait here for their turn instead of racing each
    other for the same seq; only writers in other processes can still
    collide, and the unique ``(room_id, seq)`` index makes the loser read
    again. A room's lock lives only while someone holds or waits for it.

    The wait is bounded: while the database is slow or down, each turn can
    take the full server-selection timeout, and a queue of senders must not
    add those up (nor hold a graceful shutdown hostage). A sender that waits
    longer than ``max_wait`` gets Unavailable and retries with its client_id.
    """

    def __init__(self, max_wait: float = 5.0) -> None:
        self.max_wait = max_wait
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, room_id: str) -> AsyncIterator[None]:
        lock, waiting = self._locks.get(room_id, (asyncio.Lock(), 0))
        self._locks[room_id] = (lock, waiting + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), self.max_wait)
            except TimeoutError:
                raise Unavailable(f"messages to room {room_id} are queueing; retry shortly") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, waiting = self._locks[room_id]
            if waiting == 1:
                del self._locks[room_id]
            else:
                self._locks[room_id] = (lock, waiting - 1)


def _new_message(new: NewMessage, seq: int, now: datetime.datetime) -> Message:
    return new.stored_as(message_id(new), seq, now)


class MongoMessages(MessageRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage
        self._writers = RoomWriters()
        # Revisions of a room take turns too (apart from sends, which they need not wait for).
        self._revisers = RoomWriters()

    async def _find_by_client_id(self, new: NewMessage) -> Message | None:
        doc = await self._storage.db.messages.find_one({"_id": message_id(new)})
        return _message(doc) if doc else None

    async def add_many(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        if not news:
            return []
        with _translate_errors():
            async with self._writers.turn(news[0].room_id):
                return await self._insert_next(news)

    async def _insert_next(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        """Store ``news`` (one room's) under the seqs after the highest one stored, in order.

        The room's ``last_seq`` counter is only ever moved to a seq already
        stored, so when it reads k, message k exists; the inserts try k+1,
        k+2, ... in one ordered ``insert_many``, and if another process
        stored one of those seqs first (the unique index says so), it exists,
        and the rest follow it. A seq is thus only written once the one
        before it is stored: seqs have no holes, and no message can appear
        below one a reader has already seen (a counter drawn *before* the
        insert, as ``$inc`` would, allows both). A crash between the inserts
        and the counter's move only leaves the counter behind, and the next
        writer steps past it.

        A message's ``_id`` is derived from its room, user and client_id
        (:func:`message_id`), so a resend collides on ``_id`` and the original
        is fetched by ``_id``: no look-up comes first, and none scans (FerretDB
        scans for any query but one on ``_id``, and does not say which unique
        index refused an insert).
        """
        db = self._storage.db
        room_id = news[0].room_id
        room = await db.rooms.find_one({"_id": room_id})
        if room is None:
            raise RoomGone([room_id])
        if room.get("archived_at") is not None:
            # Read anyway for its seq: refusing here costs nothing.
            raise RoomArchived([room_id])
        seq = int(room.get("last_seq", 0)) + 1
        results: list[tuple[Message, bool] | None] = [None] * len(news)
        waiting = list(range(len(news)))  # indexes into news, in order
        for _ in range(MAX_SEQ_ATTEMPTS):
            now = utcnow()
            batch = [_new_message(news[i], seq + offset, now) for offset, i in enumerate(waiting)]
            try:
                await db.messages.insert_many([_document(m) for m in batch], ordered=True)
                stored = len(batch)
            except BulkWriteError as exc:
                # Ordered: everything before the first error was stored, nothing after it.
                errors = exc.details.get("writeErrors") or [{}]
                if errors[0].get("code") != DUPLICATE_KEY:
                    raise
                stored = int(errors[0]["index"])
            for offset in range(stored):
                results[waiting[offset]] = (batch[offset], True)
            if stored == len(batch):
                waiting = []
                break
            refused = waiting[stored]
            existing = await self._find_by_client_id(news[refused])
            if existing is not None:
                results[refused] = (existing, False)  # a resend: acknowledge the original
                seq = batch[stored].seq  # still free, as far as we know
                waiting = waiting[stored + 1 :]
            else:
                seq = batch[stored].seq + 1  # taken, so stored: the next one may follow it
                waiting = waiting[stored:]
            if not waiting:
                break
        if waiting:
            raise Unavailable(f"could not store messages in room {room_id} after {MAX_SEQ_ATTEMPTS} attempts")
        done = [result for result in results if result is not None]
        # Resends' originals too: they are acknowledged and published once
        # this returns, and the counter must cover every seq that is (their
        # first writer may have died before moving it).
        highest = max((message.seq for message, _ in done), default=0)
        if highest:
            await db.rooms.update_one(
                {"_id": room_id, "last_seq": {"$lt": highest}},
                {"$set": {"last_seq": highest, "last_message_at": done[-1][0].created_at}},
            )
        return done

    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        with _translate_errors():
            cursor = self._storage.db.messages.find({"room_id": room_id}).sort("seq", DESCENDING).limit(limit + 1)
            docs = [doc async for doc in cursor]
        return [_message(doc) for doc in reversed(docs[:limit])], len(docs) > limit

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        ids = list(room_ids)
        if not ids:
            return {}
        fields = {"last_seq": 1, "last_rev": 1}
        with _translate_errors():
            if len(ids) == 1:  # by equality: FerretDB answers that far faster than an $in of one
                doc = await self._storage.db.rooms.find_one({"_id": ids[0]}, fields)
                docs = [doc] if doc else []
            else:
                docs = [doc async for doc in self._storage.db.rooms.find({"_id": {"$in": ids}}, fields)]
        return {doc["_id"]: RoomCounters(int(doc.get("last_seq", 0)), int(doc.get("last_rev", 0))) for doc in docs}

    async def get(self, room_id: str, message_id: str) -> Message | None:
        with _translate_errors():
            doc = await self._storage.db.messages.find_one({"_id": message_id, "room_id": room_id})
        return _message(doc) if doc else None

    async def revise(self, revision: Revision) -> Message | None:
        """Draw the room's next rev (``$inc``), then write the message under it if its rev is lower.

        On MongoDB ``$inc`` and the conditional update are atomic, so revs
        are unique and one message's revs only grow, whatever the race.
        FerretDB v1's findAndModify is not atomic: revisions of one room in
        one process take turns (so they cannot race there), but two
        processes revising one room at the same instant may draw the same
        rev on FerretDB.
        """
        if revision.body is None:
            change: dict[str, Any] = {"body": "", "html": "", "deleted_at": revision.at}
        else:
            change = {"body": revision.body, "html": revision.html, "edited_at": revision.at}
        with _translate_errors():
            async with self._revisers.turn(revision.room_id):
                return await self._revise(revision, change)

    async def _revise(self, revision: Revision, change: dict[str, Any]) -> Message | None:
        db = self._storage.db
        where = {"_id": revision.message_id, "room_id": revision.room_id}
        for _ in range(MAX_SEQ_ATTEMPTS):
            if await db.messages.find_one(where, {"_id": 1}) is None:
                return None
            room = await db.rooms.find_one_and_update(
                {"_id": revision.room_id, **NOT_ARCHIVED},
                {"$inc": {"last_rev": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if room is None:
                if await db.rooms.find_one({"_id": revision.room_id, "archived_at": {"$exists": True}}, {"_id": 1}):
                    raise RoomArchived([revision.room_id])
                return None
            rev = int(room["last_rev"])
            doc = await db.messages.find_one_and_update(
                {**where, "rev": {"$not": {"$gte": rev}}},
                {"$set": {**change, "rev": rev}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return _message(doc)
        raise Unavailable(f"could not revise message {revision.message_id} after {MAX_SEQ_ATTEMPTS} attempts")

    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        with _translate_errors():
            cursor = (
                self._storage.db.messages.find({"room_id": room_id, "rev": {"$gt": rev}})
                .sort("rev", ASCENDING)
                .limit(limit + 1)
            )
            docs = [doc async for doc in cursor]
        return [_message(doc) for doc in docs[:limit]], len(docs) > limit

    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        with _translate_errors():
            cursor = (
                self._storage.db.messages.find({"room_id": room_id, "seq": {"$gt": since_seq}})
                .sort("seq", ASCENDING)
                .limit(limit + 1)
            )
            docs = [doc async for doc in cursor]
        return [_message(doc) for doc in docs[:limit]], len(docs) > limit

    async def restore(self, messages: Sequence[Message]) -> int:
        if not messages:
            return 0
        room_id = room_of(messages)
        db = self._storage.db
        docs = []
        for message in messages:
            # The _id a send of it would have had here (see message_id), not the exported one.
            doc = _document(replace(message, id=message_id(message)))
            changes = {"edited_at": message.edited_at, "deleted_at": message.deleted_at, "rev": message.rev or None}
            doc.update((key, value) for key, value in changes.items() if value is not None)
            docs.append(doc)
        with _translate_errors():
            async with self._writers.turn(room_id):
                if await db.rooms.find_one({"_id": room_id}, {"_id": 1}) is None:
                    raise RoomGone([room_id])
                try:
                    await db.messages.insert_many(docs, ordered=False)
                    stored = len(docs)
                except BulkWriteError as exc:
                    # Held already (a seq, or the same user's client_id): kept as it is.
                    errors = exc.details.get("writeErrors", [])
                    if any(error.get("code") != DUPLICATE_KEY for error in errors):
                        raise
                    stored = len(docs) - len(errors)
                # The counters follow what the room now holds (a skipped
                # message's seq may not be stored at all), never moving down.
                newest = await db.messages.find_one({"room_id": room_id}, sort=[("seq", DESCENDING)])
                latest_rev = await db.messages.find_one({"room_id": room_id}, {"rev": 1}, sort=[("rev", DESCENDING)])
                if newest is not None:
                    await db.rooms.update_one(
                        {"_id": room_id},
                        {
                            "$max": {
                                "last_seq": int(newest["seq"]),
                                "last_rev": int((latest_rev or {}).get("rev", 0)),
                                "last_message_at": newest["created_at"],
                            }
                        },
                    )
        return stored

    async def count(self) -> int:
        return await self._storage.count("messages", {})


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

    async def find_one(self, collection: str, query: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with _translate_errors():
            doc: Mapping[str, Any] | None = await self.db[collection].find_one(query)
        return doc

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
