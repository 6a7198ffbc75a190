"""Messages in MongoDB: gapless seqs under the unique (room_id, seq) index, idempotent by client_id, revisions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
)

from ...errors import RoomArchived, RoomGone, Unavailable
from ...models import (
    Message,
    NewMessage,
    Revision,
    RoomCounters,
    utcnow,
)
from ..base import (
    MessageRepository,
    room_of,
)
from .bulk import update_each
from .closings import OpenRooms, closing_token
from .documents import DUPLICATE_KEY, NOT_ARCHIVED, _document, _message, _new_message, _translate_errors, message_id
from .writers import RoomWriters

if TYPE_CHECKING:
    from .storage import MongoStorage

# Attempts per message before giving up; more than one only when writers in
# several processes send to the same room at the same moment.
MAX_SEQ_ATTEMPTS = 50


class MongoMessages(MessageRepository):
    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage
        self._writers = RoomWriters()
        self._open = OpenRooms()
        # Revisions of a room take turns too (apart from sends, which they need not wait for).
        self._revisers = RoomWriters()

    async def _find_by_client_id(self, new: NewMessage) -> Message | None:
        doc = await self._storage.db.messages.find_one({"_id": message_id(new)})
        return _message(doc) if doc else None

    async def add_many(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        if not news:
            return []
        room_ids = sorted({new.room_id for new in news})
        with _translate_errors():
            async with contextlib.AsyncExitStack() as turns:
                # In one order everywhere, so two batches sharing rooms cannot wait for each other.
                for room_id in room_ids:
                    await turns.enter_async_context(self._writers.turn(room_id))
                return await self._insert_next(news, room_ids)

    async def _next_seqs(self, room_ids: Sequence[str]) -> dict[str, int]:
        """Each room's next seq as its counter says, one find by ``_id`` each, all at once.

        RoomGone or RoomArchived naming the rooms that are so.
        """
        rooms = self._storage.db.rooms
        fields = {"last_seq": 1, "archived_at": 1}
        found = await asyncio.gather(*(rooms.find_one({"_id": room_id}, fields) for room_id in room_ids))
        by_id = {doc["_id"]: doc for doc in found if doc is not None}
        if gone := [room_id for room_id in room_ids if room_id not in by_id]:
            raise RoomGone(gone)
        if archived := [room_id for room_id, doc in by_id.items() if doc.get("archived_at") is not None]:
            # Read anyway for the seqs: refusing here costs nothing.
            raise RoomArchived(archived)
        return {room_id: int(doc.get("last_seq", 0)) + 1 for room_id, doc in by_id.items()}

    async def _insert_next(self, news: Sequence[NewMessage], room_ids: Sequence[str]) -> list[tuple[Message, bool]]:
        """Store ``news`` under each room's seqs after the highest one stored, each room's in order.

        A room's ``last_seq`` counter is only ever moved to a seq already
        stored, so when it reads k, message k exists; the inserts try k+1,
        k+2, ... in one ordered ``insert_many`` for every room of the batch,
        and if another process stored one of those seqs first (the unique
        index says so), it exists, and the rest follow it. A seq is thus only
        written once the one before it is stored: seqs have no holes, and no
        message can appear below one a reader has already seen (a counter
        drawn *before* the insert, as ``$inc`` would, allows both). A crash
        between the inserts and the counters' move only leaves a counter
        behind, and the next writer steps past it.

        A busy process's messages to many rooms cost the same few commands
        as one room's: one read of the rooms' closing token
        (chat.storage.mongo.closings), reads by ``_id`` (at once) of the rooms
        this writer has not checked in the last seconds, one insert, the
        counters' moves (bulk writes sent at once) and, in the service, the
        authors' read markers. Only a refused insert (a resend, or a seq
        another process took) costs more (see :meth:`_insert_in_order`).

        A message's ``_id`` is derived from its room, user and client_id
        (:func:`message_id`), so a resend collides on ``_id`` and the original
        is fetched by ``_id``: no look-up comes first, and none scans (FerretDB
        scans for any query but one on ``_id``, and does not say which unique
        index refused an insert).
        """
        db = self._storage.db
        token = await closing_token(db)
        next_seq = self._open.next_seqs(token, room_ids)
        if unknown := [room_id for room_id in room_ids if room_id not in next_seq]:
            read = await self._next_seqs(unknown)
            self._open.checked(token, read)
            next_seq.update(read)
        done = await self._insert_in_order(news, next_seq)
        # Resends' originals too: they are acknowledged and published once
        # add_many returns, and the counter must cover every seq that is
        # (their first writer may have died before moving it).
        highest: dict[str, Message] = {}
        for message, _ in done:
            held = highest.get(message.room_id)
            if held is None or message.seq > held.seq:
                highest[message.room_id] = message
        await self._move_counters(highest)
        self._open.wrote({room_id: message.seq + 1 for room_id, message in highest.items()})
        return done

    async def _insert_in_order(
        self, news: Sequence[NewMessage], next_seq: dict[str, int]
    ) -> list[tuple[Message, bool]]:
        """Insert ``news`` in one ordered insert from ``next_seq`` on; after a refusal, each room goes on alone.

        A refused message (a resend, or a seq another process took) stops
        the ordered insert there, so after the first refusal every room's
        rest is inserted at once, each in its own ordered inserts: one room's
        refusals (a sender resending many unacknowledged messages) must not
        cost every other room of the batch a round trip each.
        """
        results: list[tuple[Message, bool] | None] = [None] * len(news)
        waiting = list(range(len(news)))  # indexes into news, in order
        # Every refusal settles one message or moves past one taken seq.
        for _ in range(MAX_SEQ_ATTEMPTS + len(news)):
            now = utcnow()
            seqs = dict(next_seq)
            batch = []
            for i in waiting:
                room_id = news[i].room_id
                batch.append(_new_message(news[i], seqs[room_id], now))
                seqs[room_id] += 1
            stored = await self._insert_ordered(batch)
            for offset in range(stored):
                results[waiting[offset]] = (batch[offset], True)
                next_seq[batch[offset].room_id] = batch[offset].seq + 1
            if stored == len(batch):
                waiting = []
                break
            refused, refused_as = waiting[stored], batch[stored]
            existing = await self._find_by_client_id(news[refused])
            if existing is not None:
                results[refused] = (existing, False)  # a resend: acknowledge the original; its seq is still free
                waiting = waiting[stored + 1 :]
            else:
                # Taken, so stored: the next may follow it, or follow the
                # counter if another process wrote several meanwhile.
                counted = await self.counters([refused_as.room_id])
                last = counted.get(refused_as.room_id, RoomCounters()).seq
                next_seq[refused_as.room_id] = max(refused_as.seq, last) + 1
                waiting = waiting[stored:]
            if len({news[i].room_id for i in waiting}) > 1:
                for i, result in await self._each_room_alone([news[i] for i in waiting], waiting, next_seq):
                    results[i] = result
                waiting = []
            if not waiting:
                break
        if waiting:
            rooms = ", ".join(sorted({news[i].room_id for i in waiting}))
            raise Unavailable(f"could not store messages in rooms {rooms} after {MAX_SEQ_ATTEMPTS} attempts")
        return [result for result in results if result is not None]

    async def _insert_ordered(self, batch: Sequence[Message]) -> int:
        """Insert ``batch`` in order, stopping at a duplicate key; how many were stored."""
        try:
            await self._storage.db.messages.insert_many([_document(m) for m in batch], ordered=True)
        except BulkWriteError as exc:
            # Ordered: everything before the first error was stored, nothing after it.
            errors = exc.details.get("writeErrors") or [{}]
            if errors[0].get("code") != DUPLICATE_KEY:
                raise
            return int(errors[0]["index"])
        return len(batch)

    async def _each_room_alone(
        self, news: Sequence[NewMessage], indexes: Sequence[int], next_seq: Mapping[str, int]
    ) -> list[tuple[int, tuple[Message, bool]]]:
        """Each room's messages of ``news`` inserted on its own, all rooms at once; results by ``indexes``."""
        by_room: dict[str, list[int]] = {}
        for position, new in enumerate(news):
            by_room.setdefault(new.room_id, []).append(position)
        outcomes = await asyncio.gather(
            *(
                self._insert_in_order([news[p] for p in positions], {room_id: next_seq[room_id]})
                for room_id, positions in by_room.items()
            )
        )
        return [
            (indexes[p], result)
            for positions, outcome in zip(by_room.values(), outcomes, strict=True)
            for p, result in zip(positions, outcome, strict=True)
        ]

    async def _move_counters(self, highest: Mapping[str, Message]) -> None:
        """Move each room's counter up to the seq of its message in ``highest`` (never down).

        On MongoDB each move is atomic (the filter and the change), so a
        counter never moves down. FerretDB v1 reads the document and writes
        it back: two processes moving one room's counter at the same instant
        can leave it at the lower seq. The next writer then steps past the
        seqs it finds taken, and the sweep notices a lost publish only once
        the counter moves again.
        """
        moves = [
            UpdateOne(
                {"_id": room_id, "last_seq": {"$lt": message.seq}},
                {"$set": {"last_seq": message.seq, "last_message_at": message.created_at}},
            )
            for room_id, message in highest.items()
        ]
        await update_each(self._storage.db.rooms, moves)

    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        with _translate_errors():
            cursor = self._storage.db.messages.find({"room_id": room_id}).sort("seq", DESCENDING).limit(limit + 1)
            docs = [doc async for doc in cursor]
        return [_message(doc) for doc in reversed(docs[:limit])], len(docs) > limit

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        docs = await self._storage.find_by_ids("rooms", list(room_ids), fields={"last_seq": 1, "last_rev": 1})
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
