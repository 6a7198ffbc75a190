"""One token that changes whenever a room stops taking messages (archived, unarchived, deleted).

A writer that checked a room a moment ago need not read it again before each
batch: it reads this one document instead, and reads the room again only if
the token moved (or its copy is older than ``OPEN_FOR_SECONDS``). A room is
marked archived first and the token moves second, so a writer that reads the
token after the move reads the room after the mark.

A new random token each time, not a counter: FerretDB's ``$inc`` is a read
and a write, and two archivings at once could both write the same next
number, one of which a writer had already seen.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

COLLECTION = "meta"
DOCUMENT_ID = "rooms_closed"


async def note_closing(db: Any) -> None:
    """Tell every writer that some room may no longer take messages (after marking it)."""
    await db[COLLECTION].update_one({"_id": DOCUMENT_ID}, {"$set": {"token": secrets.token_hex(8)}}, upsert=True)


async def closing_token(db: Any) -> str:
    """The token as it is now ("" before any room ever closed)."""
    doc = await db[COLLECTION].find_one({"_id": DOCUMENT_ID})
    return str(doc["token"]) if doc else ""


# How long a writer trusts that a room it checked is still open, whatever the
# token says: bounds the harm of an archiving cut short between its two writes.
OPEN_FOR_SECONDS = 5.0
# Rooms a writer remembers (the most recently written).
REMEMBERED_ROOMS = 10_000


class OpenRooms:
    """The rooms a writer found open (not archived, not deleted) as of a token, and their next seqs.

    A next seq is only a first guess: a seq another process took meanwhile is
    refused by the unique ``(room_id, seq)`` index, and the writer steps past.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: str | None = None
        self._rooms: OrderedDict[str, tuple[int, float]] = OrderedDict()  # next seq, checked at

    def next_seqs(self, token: str, room_ids: Iterable[str]) -> dict[str, int]:
        """Next seqs of the rooms known open as of ``token`` and checked lately; the others must be read."""
        if token != self._token:
            self._rooms.clear()
            self._token = token
        now = self._clock()
        known = {}
        for room_id in room_ids:
            entry = self._rooms.get(room_id)
            if entry is not None and now - entry[1] < OPEN_FOR_SECONDS:
                known[room_id] = entry[0]
        return known

    def checked(self, token: str, next_seqs: Mapping[str, int]) -> None:
        """These rooms were read open after ``token`` was read (and given to :meth:`next_seqs`), with these next seqs.

        Ignored if the token has moved since: the rooms were maybe read before a closing.
        """
        if token != self._token:
            return
        now = self._clock()
        for room_id, seq in next_seqs.items():
            self._rooms[room_id] = (seq, now)
            self._rooms.move_to_end(room_id)
        while len(self._rooms) > REMEMBERED_ROOMS:
            self._rooms.popitem(last=False)

    def wrote(self, next_seqs: Mapping[str, int]) -> None:
        """This writer stored up to these next seqs; the rooms' checks keep their age."""
        for room_id, seq in next_seqs.items():
            entry = self._rooms.get(room_id)
            if entry is not None and seq > entry[0]:
                self._rooms[room_id] = (seq, entry[1])
