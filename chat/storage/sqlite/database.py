"""The one SQLite file: a writer connection behind a lock, a reader, transactions, the schema upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import aiosqlite

from ...errors import Conflict, Unavailable
from .rows import _translate_errors
from .schema import ADDED_COLUMNS, LATE_INDEXES, ROOMS_TABLE, SCHEMA


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

    async def rows_by_id(self, table: str, ids: Collection[str]) -> list[sqlite3.Row]:
        """Every row of ``table`` whose ``id`` is in ``ids`` (``table`` is ours, never a user's)."""
        wanted = list(ids)
        rows: list[sqlite3.Row] = []
        for start in range(0, len(wanted), 500):  # SQLite caps the parameters of one statement
            chunk = wanted[start : start + 500]
            rows += await self.fetchall(
                f"SELECT * FROM {table} WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk)
            )
        return rows

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
