"""A SQLite file made by an earlier version opens with the columns added since."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

from chat.storage.sqlite import SQLiteStorage

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
