"""Between SQLite rows and the models: times as milliseconds, one reader per kind of row, errors as ChatErrors."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Iterator

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


def _to_ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        # OperationalError and its kin: "database is locked", I/O errors, a
        # full disk. They mean "cannot serve now", never "your input is wrong".
        raise Unavailable(f"SQLite: {exc}") from exc
    except ValueError as exc:
        # aiosqlite's word for a closed connection; any other ValueError is a
        # bug and must surface as one.
        if str(exc) in {"Connection closed", "no active connection"}:
            raise Unavailable(f"SQLite: {exc}") from exc
        raise


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=bytes(row["password_hash"]),
        created_at=_from_ms(row["created_at"]),
        disabled=bool(row["disabled"]),
        admin=bool(row["admin"]),
    )


def _room(row: sqlite3.Row) -> Room:
    return Room(
        id=row["id"],
        name=row["name"],
        creator_id=row["creator_id"],
        creator_username=row["creator_username"],
        created_at=_from_ms(row["created_at"]),
        last_seq=row["last_seq"],
        kind=RoomKind(row["kind"]),
        topic=row["topic"],
        last_message_at=_from_ms(row["last_message_at"]) if row["last_message_at"] is not None else None,
        archived_at=_from_ms(row["archived_at"]) if row["archived_at"] is not None else None,
    )


def _membership(row: sqlite3.Row) -> Membership:
    return Membership(
        room_id=row["room_id"],
        user_id=row["user_id"],
        username=row["username"],
        role=Role(row["role"]),
        joined_at=_from_ms(row["joined_at"]),
        read_seq=row["read_seq"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        room_id=row["room_id"],
        seq=row["seq"],
        user_id=row["user_id"],
        username=row["username"],
        body=row["body"],
        created_at=_from_ms(row["created_at"]),
        client_id=row["client_id"],
        edited_at=_from_ms(row["edited_at"]) if row["edited_at"] is not None else None,
        deleted_at=_from_ms(row["deleted_at"]) if row["deleted_at"] is not None else None,
        rev=row["rev"],
        html=row["html"],
    )


def _client_key(message: NewMessage | Message) -> tuple[str, str, str]:
    """What makes a send unique: the same client_id from the same user in the same room is a resend."""
    return (message.room_id, message.user_id, message.client_id)


# A session is live while both its ends are ahead; a database from before idle
# expiry was added has 0 there, which means "only the absolute end".
_LIVE = "expires_at > ? AND (idle_expires_at > ? OR idle_expires_at = 0)"


def _session(row: sqlite3.Row) -> Session:
    expires_at = _from_ms(row["expires_at"])
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        created_at=_from_ms(row["created_at"]),
        expires_at=expires_at,
        idle_expires_at=_from_ms(row["idle_expires_at"]) if row["idle_expires_at"] else expires_at,
    )


def _ban(row: sqlite3.Row) -> Ban:
    return Ban(row["room_id"], row["user_id"], row["by_user_id"], _from_ms(row["at"]))
