"""What the backing services alone accept, measured in the same run as the scenarios.

A scenario's stored messages/s means little without the limit under it: these
are the ceilings it is read against. Each writes message-shaped data straight
through the driver the server uses, with nothing of chat in between:

- the database: ``insert_many`` of 64 messages per call (a busy room's group
  commit) by 4 writers over 200 rooms, into a collection with the server's
  unique ``(room_id, seq)`` index and its write concern (MongoDB), or
  ``executemany`` of 64 rows per ``BEGIN IMMEDIATE`` transaction with WAL and
  ``synchronous=FULL`` through aiosqlite, one writer (SQLite allows one);
- Redis: ``PUBLISH`` of a message-sized frame, 64 per pipelined round trip,
  by 4 writers over 200 channels (nobody subscribed: the broker's own cost).

Scratch data only: its own database or file, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SECONDS = 3.0
BATCH = 64
WRITERS = 4
ROOMS = 200
BODY = "a message of about the length people type in a busy room, with some words"
FRAME = (
    '{"type":"message","message":{"id":"0123456789abcdef01234567","room_id":"0123456789abcdef01234567",'
    '"seq":123456,"user_id":"0123456789abcdef01234567","username":"someone","body":"' + BODY + '",'
    '"html":"<p>' + BODY + '</p>","created_at":"2026-01-01T00:00:00.000Z","client_id":"c-0123456789"}}'
)


async def _rate(write: Callable[[int, int], Awaitable[int]], writers: int, seconds: float) -> float:
    """Items per second that ``writers`` concurrent loops of ``write(writer, round)`` stored in ``seconds``."""
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(writer: int) -> None:
        nonlocal done
        round_ = 0
        while time.monotonic() < deadline:
            done += await write(writer, round_)
            round_ += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(writer) for writer in range(writers)))
    return round(done / (time.monotonic() - started), 1)


def _message(room: int, seq: int) -> dict[str, object]:
    return {
        "room_id": f"room-{room}",
        "seq": seq,
        "user_id": "0123456789abcdef01234567",
        "username": "someone",
        "body": BODY,
        "html": f"<p>{BODY}</p>",
        "created_at": datetime.datetime.now(datetime.UTC),
        "client_id": uuid.uuid4().hex,
    }


async def mongo_inserts_per_second(url: str, seconds: float = SECONDS) -> float:
    """Messages/s that ``insert_many`` stores on the server of ``url`` (a scratch database there)."""
    from pymongo import ASCENDING, AsyncMongoClient

    from ...storage.mongo.storage import DEFAULT_TIMEOUTS_MS, DEFAULT_WRITE_CONCERN

    options: dict[str, Any] = {**DEFAULT_TIMEOUTS_MS, **DEFAULT_WRITE_CONCERN}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **options)
    name = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    messages = client[name].messages
    try:
        await messages.create_index([("room_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        next_seq = [1] * ROOMS

        async def write(writer: int, round_: int) -> int:
            room = (writer + round_ * WRITERS) % ROOMS
            first, next_seq[room] = next_seq[room], next_seq[room] + BATCH
            await messages.insert_many([_message(room, seq) for seq in range(first, first + BATCH)])
            return BATCH

        return await _rate(write, WRITERS, seconds)
    finally:
        await client.drop_database(name)
        await client.close()


async def sqlite_inserts_per_second(path: Path, seconds: float = SECONDS) -> float:
    """Messages/s that one writer stores in a scratch SQLite file, as the server's connection is set up."""
    import aiosqlite

    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute(
            "CREATE TABLE messages (room_id TEXT, seq INTEGER, user_id TEXT, username TEXT, body TEXT, html TEXT,"
            " created_at TEXT, client_id TEXT, PRIMARY KEY (room_id, seq))"
        )
        next_seq = [1] * ROOMS

        async def write(writer: int, round_: int) -> int:
            room = round_ % ROOMS
            first, next_seq[room] = next_seq[room], next_seq[room] + BATCH
            rows = [tuple(str(value) for value in _message(room, seq).values()) for seq in range(first, first + BATCH)]
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            await conn.execute("COMMIT")
            return BATCH

        return await _rate(write, 1, seconds)
    finally:
        await conn.close()
        await asyncio.to_thread(_remove_database, path)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def redis_publishes_per_second(url: str, seconds: float = SECONDS) -> float:
    """PUBLISHes/s that the Redis of ``url`` takes, pipelined."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:

        async def write(writer: int, round_: int) -> int:
            pipe = client.pipeline(transaction=False)
            for i in range(BATCH):
                pipe.publish(f"chat:room:ceiling-{(writer * BATCH + i + round_) % ROOMS}", FRAME)
            await pipe.execute()
            return BATCH

        return await _rate(write, WRITERS, seconds)
    finally:
        await client.aclose()


def measure(database_url: str | None, broker_url: str | None, scratch_dir: Path) -> dict[str, float]:
    """The ceilings a target's services allow: ``storage`` messages/s and ``broker`` publishes/s, as known."""

    async def both() -> dict[str, float]:
        found: dict[str, float] = {}
        if database_url is not None and database_url.startswith("mongodb"):
            found["storage"] = await mongo_inserts_per_second(database_url)
        elif database_url is not None and database_url.startswith("sqlite"):
            found["storage"] = await sqlite_inserts_per_second(scratch_dir / f"ceiling-{uuid.uuid4().hex[:8]}.db")
        if broker_url is not None and broker_url.startswith(("redis://", "rediss://", "unix://")):
            found["broker"] = await redis_publishes_per_second(broker_url)
        return found

    return asyncio.run(both())
