"""The embedded backend: one SQLite file, for ``make run`` on a bare machine.

SQLite allows one writer at a time, so all writes go through one connection
behind an asyncio lock, each in an explicit ``BEGIN IMMEDIATE`` transaction.
Reads use a second connection: in WAL mode it sees only committed data and
never waits for the writer. ``synchronous=FULL`` makes a commit durable before
``add`` returns, which is what lets the caller acknowledge a message.

One SQLite file belongs to one chat process; the multi-process group uses
MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from pathlib import Path

import aiosqlite

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

# A room's name is unique among public rooms and DMs only (rooms_unique_names
# below): a private room's name must not tell outsiders it exists. The table
# stands apart because an upgrade builds it afresh (_Database._upgrade_room_names).
ROOMS_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    creator_username TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_rev INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'public',
    topic TEXT NOT NULL DEFAULT '',
    last_message_at INTEGER,
    archived_at INTEGER
);
"""

SCHEMA = (
    ROOMS_TABLE.format(table="rooms")
    + """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    username_lower TEXT NOT NULL UNIQUE,
    password_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);
CREATE TABLE IF NOT EXISTS memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at INTEGER NOT NULL,
    read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS mentions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, seq)
);
CREATE INDEX IF NOT EXISTS memberships_user ON memberships (user_id, joined_at);
CREATE TABLE IF NOT EXISTS moderation (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_room ON moderation (room_id, at);
CREATE TABLE IF NOT EXISTS bans (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    by_user_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    edited_at INTEGER,
    deleted_at INTEGER,
    rev INTEGER NOT NULL DEFAULT 0,
    html TEXT NOT NULL DEFAULT '',
    UNIQUE (room_id, seq),
    UNIQUE (room_id, user_id, client_id)
);
"""
)


# Columns added after the first release, for databases created before them.
ADDED_COLUMNS = (
    ("users", "disabled", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "admin", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "idle_expires_at", "INTEGER NOT NULL DEFAULT 0"),
    ("rooms", "last_rev", "INTEGER NOT NULL DEFAULT 0"),
    ("rooms", "kind", "TEXT NOT NULL DEFAULT 'public'"),
    ("rooms", "topic", "TEXT NOT NULL DEFAULT ''"),
    ("rooms", "last_message_at", "INTEGER"),
    ("rooms", "archived_at", "INTEGER"),
    ("memberships", "read_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "edited_at", "INTEGER"),
    ("messages", "deleted_at", "INTEGER"),
    ("messages", "rev", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "html", "TEXT NOT NULL DEFAULT ''"),
)
# Indexes on added columns: made once the columns exist.
LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_room_rev ON messages (room_id, rev);
CREATE INDEX IF NOT EXISTS rooms_kind_created ON rooms (kind, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS rooms_unique_names ON rooms (name_lower) WHERE kind <> 'private';
"""


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


class _Database:
    """The two connections and the writer lock, shared by the repositories."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with _translate_errors():
            self._writer = await self._connect()
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._writer.executescript(SCHEMA)
            await self._add_missing_columns(self._writer)
            await self._upgrade_room_names()
            await self._writer.executescript(LATE_INDEXES)
            # An in-memory database is private to its connection, so there the
            # writer serves reads too.
            self._reader = self._writer if self.path == ":memory:" else await self._connect()

    async def _add_missing_columns(self, conn: aiosqlite.Connection) -> None:
        """Bring a database made by an earlier version up to SCHEMA (columns added since)."""
        for table, column, definition in ADDED_COLUMNS:
            async with conn.execute(f"PRAGMA table_info({table})") as cursor:
                present = {row["name"] for row in await cursor.fetchall()}
            if column not in present:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    async def _upgrade_room_names(self) -> None:
        """Free the names of private rooms in a database made when every room's name was unique.

        SQLite cannot drop a column's UNIQUE constraint, so such a rooms table
        is copied into one made afresh, in one transaction; LATE_INDEXES then
        makes the indexes (the dropped table took its own along).
        """
        async with self.transaction() as conn:
            async with conn.execute(
                "SELECT 1 FROM pragma_index_list('rooms') AS idx JOIN pragma_index_info(idx.name) AS col"
                " WHERE idx.origin = 'u' AND col.name = 'name_lower'"
            ) as cursor:
                if await cursor.fetchone() is None:
                    return
            async with conn.execute("SELECT name FROM pragma_table_info('rooms')") as cursor:
                columns = ", ".join(row["name"] for row in await cursor.fetchall())
            await conn.execute(ROOMS_TABLE.format(table="rooms_upgraded"))
            await conn.execute(f"INSERT INTO rooms_upgraded ({columns}) SELECT {columns} FROM rooms")
            await conn.execute("DROP TABLE rooms")
            await conn.execute("ALTER TABLE rooms_upgraded RENAME TO rooms")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def close(self) -> None:
        for conn in {id(c): c for c in (self._reader, self._writer) if c is not None}.values():
            await conn.close()
        self._writer = self._reader = None

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise Unavailable("SQLite storage is not connected")
        return conn

    async def fetchone(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Row | None:
        with _translate_errors():
            async with self._require(self._reader).execute(sql, params) as cursor:
                return await cursor.fetchone()

    async def count(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """The one number a ``SELECT COUNT(*) ...`` answers."""
        row = await self.fetchone(sql, params)
        return int(row[0]) if row else 0

    async def fetchall(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with _translate_errors():
            async with self._require(self._reader).execute(sql, params) as cursor:
                return list(await cursor.fetchall())

    async def insert(self, sql: str, params: tuple[object, ...], conflict: str) -> None:
        """Insert one row in its own transaction; a unique-key clash raises Conflict(conflict)."""
        try:
            async with self.transaction() as conn:
                await conn.execute(sql, params)
        except Conflict:
            raise Conflict(conflict) from None

    async def execute(self, sql: str, params: tuple[object, ...]) -> None:
        """Run one write statement in its own transaction."""
        async with self.transaction() as conn:
            await conn.execute(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            conn = self._require(self._writer)
            with _translate_errors():
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")


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
        session = Session(
            id=session_id,
            user_id=user_id,
            created_at=utcnow(),
            expires_at=expires_at,
            idle_expires_at=min(idle_expires_at or expires_at, expires_at),
        )
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


# What a room holds besides its own row, deleted with it.
ROOM_CONTENTS = ("messages", "memberships", "bans", "mentions", "moderation")


class SQLiteRooms(RoomRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        room = Room(
            id=new_id(),
            name=name,
            creator_id=creator.id,
            creator_username=creator.username,
            created_at=utcnow(),
            kind=kind,
        )
        await self._db.insert(
            "INSERT INTO rooms (id, name, name_lower, creator_id, creator_username, created_at, last_seq, kind)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (room.id, name, name.lower(), creator.id, creator.username, _to_ms(room.created_at), kind.value),
            conflict=f"a room named {name!r} exists already",
        )
        return room

    async def get(self, room_id: str) -> Room | None:
        row = await self._db.fetchone("SELECT * FROM rooms WHERE id = ?", (room_id,))
        return _room(row) if row else None

    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        ids = list(room_ids)
        found: dict[str, Room] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
            chunk = ids[start : start + 500]
            rows = await self._db.fetchall(
                f"SELECT * FROM rooms WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk)
            )
            found.update((row["id"], _room(row)) for row in rows)
        return found

    async def get_by_name(self, name: str) -> Room | None:
        # The very condition of rooms_unique_names, so that SQLite looks the name up in it.
        row = await self._db.fetchone("SELECT * FROM rooms WHERE name_lower = ? AND kind <> 'private'", (name.lower(),))
        return _room(row) if row else None

    async def named(self, name: str) -> list[Room]:
        rows = await self._db.fetchall(
            "SELECT * FROM rooms WHERE name_lower = ? ORDER BY created_at, id", (name.lower(),)
        )
        return [_room(row) for row in rows]

    async def list(self, search: str = "", limit: int = 10_000, offset: int = 0) -> list[Room]:
        # LIKE with its wildcards escaped: the search is a plain substring.
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._db.fetchall(
            "SELECT * FROM rooms WHERE kind = ? AND name_lower LIKE ? ESCAPE '\\'"
            " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (RoomKind.PUBLIC.value, pattern, limit, offset),
        )
        return [_room(row) for row in rows]

    async def update(self, room_id: str, *, name: str | None = None, topic: str | None = None) -> Room | None:
        changes: list[tuple[str, object]] = []
        if name is not None:
            changes += [("name", name), ("name_lower", name.lower())]
        if topic is not None:
            changes.append(("topic", topic))
        if changes:
            try:
                await self._db.execute(
                    f"UPDATE rooms SET {', '.join(f'{column} = ?' for column, _ in changes)} WHERE id = ?",
                    (*(value for _, value in changes), room_id),
                )
            except Conflict:
                raise Conflict(f"a room named {name!r} exists already") from None
        return await self.get(room_id)

    async def set_archived(self, room_id: str, archived_at: datetime.datetime | None) -> Room | None:
        at = _to_ms(archived_at) if archived_at is not None else None
        await self._db.execute("UPDATE rooms SET archived_at = ? WHERE id = ?", (at, room_id))
        return await self.get(room_id)

    async def delete(self, room_id: str) -> bool:
        # One transaction: the room and its contents go together, or not at all.
        async with self._db.transaction() as conn:
            for table in ROOM_CONTENTS:
                await conn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            cursor = await conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,))
            return cursor.rowcount > 0

    async def count(self) -> int:
        return await self._db.count("SELECT COUNT(*) FROM rooms")


class SQLiteModerationLog(ModerationLog):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, entry: ModerationEntry) -> None:
        await self._db.execute(
            "INSERT INTO moderation (room_id, actor_id, actor_username, action, target, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.room_id,
                entry.actor_id,
                entry.actor_username,
                entry.action.value,
                entry.target,
                entry.detail,
                _to_ms(entry.at),
            ),
        )

    async def list(self, room_id: str, limit: int = 100) -> list[ModerationEntry]:
        rows = await self._db.fetchall(
            "SELECT * FROM moderation WHERE room_id = ? ORDER BY at DESC, id DESC LIMIT ?", (room_id, limit)
        )
        return [
            ModerationEntry(
                row["room_id"],
                row["actor_id"],
                row["actor_username"],
                ModerationAction(row["action"]),
                row["target"],
                row["detail"],
                _from_ms(row["at"]),
            )
            for row in rows
        ]


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


class SQLiteMentions(MentionRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add_many(self, mentions: Collection[tuple[str, str, int]]) -> None:
        if not mentions:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO mentions (room_id, user_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", list(mentions)
            )

    async def counts(self, user_id: str, read_seqs: Mapping[str, int]) -> dict[str, int]:
        if not read_seqs:
            return {}
        rows = await self._db.fetchall("SELECT room_id, seq FROM mentions WHERE user_id = ?", (user_id,))
        counted: dict[str, int] = {}
        for row in rows:
            room_id = row["room_id"]
            if room_id in read_seqs and row["seq"] > read_seqs[room_id]:
                counted[room_id] = counted.get(room_id, 0) + 1
        return counted

    async def clear(self, room_id: str, user_id: str, up_to_seq: int) -> None:
        await self._db.execute(
            "DELETE FROM mentions WHERE user_id = ? AND room_id = ? AND seq <= ?", (user_id, room_id, up_to_seq)
        )


def _ban(row: sqlite3.Row) -> Ban:
    return Ban(row["room_id"], row["user_id"], row["by_user_id"], _from_ms(row["at"]))


class SQLiteBans(BanRepository):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add(self, room_id: str, user_id: str, by_user_id: str) -> Ban:
        await self._db.execute(
            "INSERT INTO bans (room_id, user_id, by_user_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id, user_id) DO NOTHING",
            (room_id, user_id, by_user_id, _to_ms(utcnow())),
        )
        ban = await self.get(room_id, user_id)
        assert ban is not None
        return ban

    async def get(self, room_id: str, user_id: str) -> Ban | None:
        row = await self._db.fetchone("SELECT * FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        return _ban(row) if row else None

    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Ban]:
        pairs = list(keys)
        if not pairs:
            return {}
        where = " OR ".join(["(room_id = ? AND user_id = ?)"] * len(pairs))
        rows = await self._db.fetchall(f"SELECT * FROM bans WHERE {where}", tuple(v for pair in pairs for v in pair))
        return {(row["room_id"], row["user_id"]): _ban(row) for row in rows}

    async def remove(self, room_id: str, user_id: str) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id))
            return cursor.rowcount > 0


class SQLiteMessages(MessageRepository):
    # One write lock for the whole file: one transaction for every room's
    # waiting messages costs one commit instead of one per room.
    batches_across_rooms = True

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def add_many(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        """One write transaction for all of them, and a handful of statements, not three per message.

        Each statement is a hop to aiosqlite's thread and back, so a batch
        costs the same few hops however many senders were waiting: one look-up
        of the client_ids already stored, one counter move per room, one insert
        of every new row. Inside the write transaction, so the check and the
        insert cannot race with another send of the same client_id.
        """
        if not news:
            return []
        keys = list(dict.fromkeys(_client_key(new) for new in news))
        async with self._db.transaction() as conn:
            where = " OR ".join(["(room_id = ? AND user_id = ? AND client_id = ?)"] * len(keys))
            async with conn.execute(
                f"SELECT * FROM messages WHERE {where}", [v for key in keys for v in key]
            ) as cursor:
                stored = {_client_key(message): message for message in map(_message, await cursor.fetchall())}
            # A resend of a message in this very batch is stored once, as first sent.
            first_sent: dict[tuple[str, str, str], NewMessage] = {}
            for new in news:
                if _client_key(new) not in stored:
                    first_sent.setdefault(_client_key(new), new)
            fresh = list(first_sent.values())
            counts = Counter(new.room_id for new in fresh)
            now = utcnow()
            next_seq: dict[str, int] = {}
            if counts:
                # Every room's counter in one statement: under load each hop
                # to the SQLite thread waits for a turn of a busy event loop.
                cases = " ".join(["WHEN ? THEN ?"] * len(counts))
                marks = ", ".join(["?"] * len(counts))
                async with conn.execute(
                    f"UPDATE rooms SET last_seq = last_seq + CASE id {cases} END, last_message_at = ?"
                    f" WHERE id IN ({marks}) AND archived_at IS NULL RETURNING id, last_seq",
                    [*(v for pair in counts.items() for v in pair), _to_ms(now), *counts],
                ) as cursor:
                    for row in await cursor.fetchall():
                        next_seq[row[0]] = row[1] - counts[row[0]] + 1
                missing = set(counts) - set(next_seq)
                if missing:
                    # Rare, so only now asked which are archived; raising rolls the counters back.
                    marks = ",".join("?" * len(missing))
                    async with conn.execute(
                        f"SELECT id FROM rooms WHERE id IN ({marks}) AND archived_at IS NOT NULL", tuple(missing)
                    ) as cursor:
                        archived = {row[0] for row in await cursor.fetchall()}
                    if archived:
                        raise RoomArchived(archived)
                    raise RoomGone(missing)
            created: dict[tuple[str, str, str], Message] = {}
            for new in fresh:
                seq, next_seq[new.room_id] = next_seq[new.room_id], next_seq[new.room_id] + 1
                created[_client_key(new)] = new.stored_as(new_id(), seq, now)
            if created:
                await conn.executemany(
                    "INSERT INTO messages (id, room_id, seq, user_id, username, body, created_at, client_id, html)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.id,
                            m.room_id,
                            m.seq,
                            m.user_id,
                            m.username,
                            m.body,
                            _to_ms(m.created_at),
                            m.client_id,
                            m.html,
                        )
                        for m in created.values()
                    ],
                )
        results: list[tuple[Message, bool]] = []
        for new in news:
            key = _client_key(new)
            if key in stored:
                results.append((stored[key], False))
            else:
                results.append((created[key], True))
                stored[key] = created[key]  # a second copy in this batch is a resend
        return results

    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        rows = await self._db.fetchall(
            "SELECT * FROM messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?", (room_id, limit + 1)
        )
        has_more = len(rows) > limit
        return [_message(row) for row in reversed(rows[:limit])], has_more

    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        rows = await self._db.fetchall(
            "SELECT * FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (room_id, since_seq, limit + 1),
        )
        return [_message(row) for row in rows[:limit]], len(rows) > limit

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        ids = list(room_ids)
        if not ids:
            return {}
        # The counters move in the transactions that store: they are exact here.
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(f"SELECT id, last_seq, last_rev FROM rooms WHERE id IN ({marks})", tuple(ids))
        return {row["id"]: RoomCounters(row["last_seq"], row["last_rev"]) for row in rows}

    async def get(self, room_id: str, message_id: str) -> Message | None:
        row = await self._db.fetchone("SELECT * FROM messages WHERE id = ? AND room_id = ?", (message_id, room_id))
        return _message(row) if row else None

    async def revise(self, revision: Revision) -> Message | None:
        # One transaction: the counter and the message move together.
        async with self._db.transaction() as conn:
            async with conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND room_id = ?", (revision.message_id, revision.room_id)
            ) as cursor:
                if await cursor.fetchone() is None:
                    return None
            async with conn.execute(
                "UPDATE rooms SET last_rev = last_rev + 1 WHERE id = ? AND archived_at IS NULL RETURNING last_rev",
                (revision.room_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                async with conn.execute("SELECT archived_at FROM rooms WHERE id = ?", (revision.room_id,)) as cursor:
                    room = await cursor.fetchone()
                if room is not None and room[0] is not None:
                    raise RoomArchived([revision.room_id])
                return None
            at = _to_ms(revision.at)
            if revision.body is None:
                sql = "UPDATE messages SET body = '', html = '', deleted_at = ?, rev = ? WHERE id = ? RETURNING *"
                params: tuple[object, ...] = (at, row[0])
            else:
                sql = "UPDATE messages SET body = ?, html = ?, edited_at = ?, rev = ? WHERE id = ? RETURNING *"
                params = (revision.body, revision.html, at, row[0])
            async with conn.execute(sql, (*params, revision.message_id)) as cursor:
                updated = await cursor.fetchone()
        return _message(updated) if updated else None

    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        rows = await self._db.fetchall(
            "SELECT * FROM messages WHERE room_id = ? AND rev > ? ORDER BY rev LIMIT ?", (room_id, rev, limit + 1)
        )
        return [_message(row) for row in rows[:limit]], len(rows) > limit

    async def restore(self, messages: Sequence[Message]) -> int:
        if not messages:
            return 0
        room_id = room_of(messages)
        async with self._db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM rooms WHERE id = ?", (room_id,)) as cursor:
                if await cursor.fetchone() is None:
                    raise RoomGone([room_id])
            # DO NOTHING on any unique key: a seq or a (user, client_id) the room holds already.
            cursor = await conn.executemany(
                "INSERT INTO messages (id, room_id, seq, user_id, username, body, created_at, client_id,"
                " edited_at, deleted_at, rev, html) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (
                        new_id(),
                        m.room_id,
                        m.seq,
                        m.user_id,
                        m.username,
                        m.body,
                        _to_ms(m.created_at),
                        m.client_id,
                        _to_ms(m.edited_at) if m.edited_at is not None else None,
                        _to_ms(m.deleted_at) if m.deleted_at is not None else None,
                        m.rev,
                        m.html,
                    )
                    for m in messages
                ],
            )
            stored = max(cursor.rowcount, 0)
            # The counters follow what the room now holds (a skipped message's
            # seq may not be stored at all), never moving down.
            await conn.execute(
                "UPDATE rooms SET"
                " last_seq = MAX(last_seq, COALESCE((SELECT MAX(seq) FROM messages WHERE room_id = :room), 0)),"
                " last_rev = MAX(last_rev, COALESCE((SELECT MAX(rev) FROM messages WHERE room_id = :room), 0)),"
                " last_message_at = NULLIF(MAX(COALESCE(last_message_at, 0), COALESCE((SELECT created_at"
                " FROM messages WHERE room_id = :room ORDER BY seq DESC LIMIT 1), 0)), 0)"
                " WHERE id = :room",
                {"room": room_id},
            )
        return stored

    async def count(self) -> int:
        return await self._db.count("SELECT COUNT(*) FROM messages")


class SQLiteStorage(Storage):
    def __init__(self, path: str) -> None:
        self._db = _Database(path)
        self.users = SQLiteUsers(self._db)
        self.sessions = SQLiteSessions(self._db)
        self.rooms = SQLiteRooms(self._db)
        self.messages = SQLiteMessages(self._db)
        self.memberships = SQLiteMemberships(self._db)
        self.bans = SQLiteBans(self._db)
        self.moderation = SQLiteModerationLog(self._db)
        self.mentions = SQLiteMentions(self._db)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStorage:
        # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"expected sqlite:///PATH, got {url!r}")
        return cls(url[len(prefix) :])

    @property
    def path(self) -> str:
        return self._db.path

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        await self._db.fetchone("SELECT 1")
