"""A SQLite file made by an earlier version opens with the columns added since, and private rooms' names freed."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
from pathlib import Path

import pytest

from chat.errors import Conflict
from chat.models import Revision, RoomCounters, RoomKind, utcnow
from chat.storage.sqlite.storage import SQLiteStorage

OLD_SCHEMA = """
CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL, username_lower TEXT NOT NULL UNIQUE,
                    password_hash BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL,
                       expires_at INTEGER NOT NULL);
"""


async def test_an_old_database_gains_the_new_columns_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    now_ms = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute("INSERT INTO users VALUES ('u1', 'alice', 'alice', x'00', ?)", (now_ms,))
        old.execute("INSERT INTO sessions VALUES ('s1', 'u1', ?, ?)", (now_ms, now_ms + 3_600_000))

    storage = SQLiteStorage(str(path))
    await storage.connect()
    try:
        user = await storage.users.get("u1")
        session = await storage.sessions.get("s1")
    finally:
        await storage.close()

    assert user is not None and user.disabled is False
    # Stored before idle expiry existed: it ends only at its absolute end.
    assert session is not None and session.idle_expires_at == session.expires_at


OLD_MESSAGES = """
CREATE TABLE rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL, name_lower TEXT NOT NULL UNIQUE,
                    creator_id TEXT NOT NULL, creator_username TEXT NOT NULL, created_at INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages (id TEXT PRIMARY KEY, room_id TEXT NOT NULL, seq INTEGER NOT NULL, user_id TEXT NOT NULL,
                       username TEXT NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL,
                       client_id TEXT NOT NULL, UNIQUE (room_id, seq), UNIQUE (room_id, user_id, client_id));
"""


async def test_messages_stored_before_edits_and_rendering_open_unrevised_and_can_be_edited(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    now_ms = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    with sqlite3.connect(path) as old:
        old.executescript(OLD_MESSAGES)
        old.execute("INSERT INTO rooms VALUES ('r1', 'Lobby', 'lobby', 'u1', 'alice', ?, 1)", (now_ms,))
        old.execute("INSERT INTO messages VALUES ('m1', 'r1', 1, 'u1', 'alice', 'hi **there**', ?, 'c1')", (now_ms,))

    storage = SQLiteStorage(str(path))
    await storage.connect()
    try:
        before = await storage.messages.get("r1", "m1")
        edited = await storage.messages.revise(Revision("r1", "m1", "hello", utcnow(), "<p>hello</p>"))
        counters = await storage.messages.counters(["r1"])
    finally:
        await storage.close()

    assert before is not None and (before.rev, before.html, before.edited_at) == (0, "", None)
    assert edited is not None and (edited.rev, edited.html) == (1, "<p>hello</p>")
    assert counters == {"r1": RoomCounters(seq=1, rev=1)}


# The rooms table as it was when every room's name was unique, private ones too.
OLD_ROOMS = """
CREATE TABLE rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL, name_lower TEXT NOT NULL UNIQUE,
                    creator_id TEXT NOT NULL, creator_username TEXT NOT NULL, created_at INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL DEFAULT 0, last_rev INTEGER NOT NULL DEFAULT 0,
                    kind TEXT NOT NULL DEFAULT 'public', topic TEXT NOT NULL DEFAULT '', last_message_at INTEGER,
                    archived_at INTEGER);
CREATE INDEX rooms_kind_created ON rooms (kind, created_at);
"""


def _stored_rooms(path: Path) -> dict[str, dict[str, object]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in db.execute("SELECT * FROM rooms")}


async def test_private_rooms_of_an_old_database_stop_reserving_their_names_and_keep_everything_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    now_ms = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    with sqlite3.connect(path) as old:
        old.executescript(OLD_ROOMS)
        old.executemany(
            "INSERT INTO rooms VALUES (?, ?, ?, 'u1', 'alice', ?, ?, 0, ?, ?, NULL, ?)",
            [
                ("r-public", "Lobby", "lobby", now_ms, 0, "public", "", None),
                ("r-private", "Hideout", "hideout", now_ms, 7, "private", "Plans", now_ms),
                ("r-direct", "dm:a:b", "dm:a:b", now_ms, 0, "direct", "", None),
            ],
        )
    before = _stored_rooms(path)

    first, second = SQLiteStorage(str(path)), SQLiteStorage(str(path))
    try:
        await asyncio.gather(first.connect(), second.connect())  # two starts at once: one upgrades
        alice = await first.users.add("alice", b"hash")
        public = await first.rooms.add("HIDEOUT", alice)
        hidden = await first.rooms.add("lobby", alice, RoomKind.PRIVATE)
        with pytest.raises(Conflict):
            await first.rooms.add("LOBBY", alice)
        direct = await first.rooms.get_by_name("DM:A:B")
        named = await first.rooms.named("lobby")
    finally:
        await first.close()
        await second.close()

    assert (public.kind, direct and direct.id) == (RoomKind.PUBLIC, "r-direct")
    assert {room.id for room in named} == {"r-public", hidden.id}
    after = _stored_rooms(path)
    assert {room_id: after[room_id] for room_id in before} == before
    with sqlite3.connect(path) as upgraded:
        indexes = {row[1]: row for row in upgraded.execute("PRAGMA index_list(rooms)")}
    assert "rooms_kind_created" in indexes
    assert indexes["rooms_unique_names"][2:] == (1, "c", 1)  # unique, made by CREATE INDEX, partial
    assert all(origin != "u" for _, _, _, origin, _ in indexes.values())  # no UNIQUE constraint left
