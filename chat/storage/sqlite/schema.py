"""The SQLite schema: tables and indexes, and what an upgrade adds to a file made by an older version."""

from __future__ import annotations

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
