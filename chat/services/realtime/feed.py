"""One room's ordered delivery in this process, and what it remembers of the room's latest messages.

A :class:`RoomFeed` delivers a room's message frames to this process's
listeners in ``seq`` order and at most once, whatever order the broker
produced, holding later frames back while it fills a gap from storage (see
:mod:`chat.services.realtime.fanout`, which owns the feeds).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ... import metrics
from ...models import Message
from ...wire.server import (
    UPDATES_MAX,
    Outbound,
    message_frame,
    message_frame_of_update,
    message_updated_frame,
    wire_of_message_frame,
)

if TYPE_CHECKING:
    from .fanout import Fanout, RevisedAfter

log = logging.getLogger(__name__)


# After a failed catch-up read, how long until the next try.
RESYNC_RETRY_SECONDS = 1.0
# The longest wait between two reads of storage for a missing seq.
MAX_FILL_DELAY_SECONDS = 5.0


class Listener(Protocol):
    def deliver(self, seq: int | None, frame: Outbound) -> None:
        """Take one frame; must not block (write to a buffer and return)."""


@dataclass(frozen=True)
class Recent:
    """A room's latest messages as this process delivered them, for history without a database read.

    ``frames`` are (seq, message frame text), consecutive and ending at
    ``last_seq``, the last seq the feed delivered; it may be empty (nothing
    known) and never holds more than the feed remembers. Anything after
    ``last_seq`` reaches a socket that joined the feed as a live frame.
    """

    last_seq: int
    frames: Sequence[tuple[int, str]]

    def latest(self, limit: int) -> tuple[list[str], bool] | None:
        """The last ``limit`` messages in wire form and whether older ones exist; None if not all known."""
        if 0 < limit <= len(self.frames):
            chosen = self.frames[len(self.frames) - limit :]
            return [wire_of_message_frame(text) for _, text in chosen], chosen[0][0] > 1
        if self.last_seq == 0 or (self.frames and self.frames[0][0] == 1):
            return [wire_of_message_frame(text) for _, text in self.frames], False
        return None

    def after(self, since: int) -> list[str] | None:
        """The messages after ``since`` up to ``last_seq`` in wire form; None if not all known."""
        if since >= self.last_seq:
            return []
        if not self.frames or self.frames[0][0] > since + 1:
            return None
        return [wire_of_message_frame(text) for seq, text in self.frames if seq > since]


class RoomFeed:
    """Ordered delivery for one room in this process, and the room's latest messages.

    The latest ``remember`` messages are kept (as the frame text that was
    delivered anyway) so that a socket joining a room this process already
    serves is sent its history without a database read: a process restart
    behind nginx sends thousands of sockets to the others at once.
    """

    def __init__(self, room_id: str, fanout: Fanout, remember: int = 0) -> None:
        self.room_id = room_id
        self.listeners: set[Listener] = set()
        self.ready = asyncio.Event()
        self._fanout = fanout
        self.last_seq = 0
        self._recent: deque[tuple[int, str]] = deque(maxlen=remember)
        self._held: dict[int, Outbound] = {}
        # Consecutive fills that did not close the gap (for backing off).
        self._fill_failures = 0
        self._resync_due = False
        self._fill_task: asyncio.Task[None] | None = None
        # Revisions (edits, deletions): every one up to rev_checked has been
        # read from storage or delivered; the revs delivered live above it
        # are in _revs_live. They are delivered as they come (a client keeps
        # the highest rev of each message, so order does not matter); the
        # sweep reads storage only when a rev above rev_checked was missed.
        self.rev_checked = 0
        self._revs_live: set[int] = set()
        self._revision_task: asyncio.Task[None] | None = None

    def start_at(self, seq: int, rev: int = 0) -> None:
        """Deliver from ``seq`` + 1 on; revisions after ``rev`` are news."""
        self.last_seq = seq
        self.rev_checked = rev
        self.ready.set()

    @property
    def rev_known(self) -> int:
        """The highest rev this feed has delivered or read (a resume cursor a joiner may be given)."""
        return max(self.rev_checked, max(self._revs_live, default=0))

    def receive_revision(self, seq: int, rev: int, text: str) -> None:
        """A message was edited or deleted: tell every listener, and remember the new version."""
        if rev in self._revs_live:
            return  # delivered already
        # One at or below rev_checked is still delivered: on MongoDB the
        # counter moves before the message does, so a feed (or a sweep) can
        # count a revision whose publish is yet to come. A copy a client
        # already holds costs it nothing (it keeps the higher rev).
        if rev > self.rev_checked:
            self._revs_live.add(rev)
        self._remember_revision(seq, rev, text)
        self._broadcast(None, Outbound(text))

    def _remember_revision(self, seq: int, rev: int, text: str) -> None:
        for index, (remembered_seq, frame) in enumerate(self._recent):
            if remembered_seq == seq:
                if json.loads(frame)["message"].get("rev", 0) < rev:
                    self._recent[index] = (seq, message_frame_of_update(text))
                return

    def check_revisions(self, stored_rev: int, read: RevisedAfter) -> None:
        """Storage's rev counter is ``stored_rev``: read whatever of it this feed missed, if anything."""
        if stored_rev <= self.rev_checked:
            return
        if all(rev in self._revs_live for rev in range(self.rev_checked + 1, stored_rev + 1)):
            self._advance_revisions(stored_rev)
            return
        if self._revision_task is None or self._revision_task.done():
            self._revision_task = asyncio.create_task(self._read_revisions(stored_rev, read))

    async def _read_revisions(self, stored_rev: int, read: RevisedAfter) -> None:
        try:
            revised, more = await read(self.room_id, self.rev_checked, UPDATES_MAX)
        except Exception as exc:
            log.warning("reading revisions of room %s failed (%s); the next sweep retries", self.room_id, exc)
            return
        for message in revised:
            if message.rev not in self._revs_live and message.rev > self.rev_checked:
                text = message_updated_frame(message)
                self._remember_revision(message.seq, message.rev, text)
                self._broadcast(None, Outbound(text))
        # A revision drawn below stored_rev but not written yet is published
        # after it is written, and so still arrives live.
        self._advance_revisions(revised[-1].rev if more and revised else stored_rev)

    def _advance_revisions(self, rev: int) -> None:
        self.rev_checked = max(self.rev_checked, rev)
        self._revs_live = {r for r in self._revs_live if r > self.rev_checked}

    def recent(self) -> Recent:
        return Recent(self.last_seq, tuple(self._recent))

    @property
    def current(self) -> bool:
        """Nothing is known to be missing: no seq held back for a gap, no catch-up due."""
        return not self._held and not self._resync_due

    def remember(self, messages: Sequence[Message]) -> None:
        """Learn older messages read from storage, where they join up with what is remembered."""
        if not messages or self._recent.maxlen == 0:
            return
        known = dict(self._recent)
        for message in messages:
            if message.seq <= self.last_seq and message.seq not in known:
                known[message.seq] = message_frame(message)
        run: list[tuple[int, str]] = []
        seq = self.last_seq
        while seq in known and len(run) < (self._recent.maxlen or 0):
            run.append((seq, known[seq]))
            seq -= 1
        if len(run) > len(self._recent):
            self._recent = deque(reversed(run), maxlen=self._recent.maxlen)

    def receive(self, seq: int | None, text: str, author: str | None = None) -> None:
        if seq is None:
            self._broadcast(None, Outbound(text, author))
            return
        if seq <= self.last_seq or seq in self._held:
            return  # already delivered or already waiting: a duplicate
        self._held[seq] = Outbound(text)
        self._drain()

    def _broadcast(self, seq: int | None, frame: Outbound) -> None:
        if seq is not None and self.listeners:
            metrics.observe_delivery(frame.text, len(self.listeners))
        for listener in tuple(self.listeners):
            try:
                listener.deliver(seq, frame)
            except Exception:
                # One broken socket must not starve the rest of the room.
                log.exception("delivery to a listener in room %s failed", self.room_id)

    def _drain(self) -> None:
        while self._held:
            seq = min(self._held)
            if seq <= self.last_seq:
                del self._held[seq]
                continue
            if seq != self.last_seq + 1:
                break
            frame = self._held.pop(seq)
            self.last_seq = seq
            self._fill_failures = 0
            self._recent.append((seq, frame.text))
            self._broadcast(seq, frame)
        if self._held:
            # Wait a moment for the missing seq to arrive, then read storage;
            # if storage does not have the answer either (it is down), wait
            # longer each time.
            delay = min(self._fanout.gap_retry * 2**self._fill_failures, MAX_FILL_DELAY_SECONDS)
            self._schedule_fill(delay)

    def resync(self) -> None:
        """Catch up from storage at once: the broker may have dropped events."""
        self._resync_due = True
        self._schedule_fill(0)

    def _schedule_fill(self, delay: float) -> None:
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = asyncio.create_task(self._fill(delay))

    async def _fill(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._held or self._resync_due:
            for message in await self._read_missed():
                if message.seq > self.last_seq and message.seq not in self._held:
                    self._held[message.seq] = Outbound(message_frame(message))
        self._fill_task = None
        if self._held:
            self._fill_failures += 1  # cleared by _drain once the gap closes
        self._drain()
        if self._resync_due:
            self._schedule_fill(RESYNC_RETRY_SECONDS)

    async def _read_missed(self) -> list[Message]:
        try:
            missed = await self._fanout.log.backfill(self.room_id, self.last_seq)
        except Exception:
            # Storage is down too: the frames after the hole stay held (never
            # delivered past it), and the fill is retried, waiting longer each time.
            log.warning("backfill of room %s after seq %d failed; retrying", self.room_id, self.last_seq, exc_info=True)
            return []
        self._resync_due = False
        return missed

    def close(self) -> None:
        for task in (self._fill_task, self._revision_task):
            if task is not None:
                task.cancel()
