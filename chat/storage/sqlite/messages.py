"""Messages in SQLite: gapless seqs under one write lock, batches across rooms, revisions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from ...errors import RoomArchived, RoomGone
from ...models import (
    Message,
    NewMessage,
    Revision,
    RoomCounters,
    new_id,
    utcnow,
)
from ..base import (
    MessageRepository,
    room_of,
)
from .database import _Database
from .rows import _client_key, _message, _to_ms


class SQLiteMessages(MessageRepository):
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
