"""Between MongoDB documents and the models.

One reader per kind of document, the ids of pairs and messages, and errors as ChatErrors.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    InvalidOperation,
)

from ...errors import Conflict, Unavailable
from ...models import (
    Ban,
    Membership,
    Message,
    NewMessage,
    Role,
    Room,
    RoomKind,
    Session,
    User,
)

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


def _ban(doc: Mapping[str, Any]) -> Ban:
    return Ban(doc["room_id"], doc["user_id"], doc["by"], doc["at"])


def _new_message(new: NewMessage, seq: int, now: datetime.datetime) -> Message:
    return new.stored_as(message_id(new), seq, now)
