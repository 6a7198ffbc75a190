"""A socket's history: the latest page, a resume after a seq, the revisions after a rev, scroll-back.

From what the room's feed remembers when it can (no database read), else
from storage; live frames that arrive meanwhile wait, so the client sees one
ordered stream. Part of :class:`~chat.services.realtime.connection.RoomConnection`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ... import metrics
from ...models import Room
from ...wire.client import FetchFrame
from ...wire.server import (
    HISTORY_PAGE_SIZE,
    UPDATES_MAX,
    Outbound,
    history_frame,
    history_frame_of,
    history_frames,
    history_frames_of,
    history_reset_frame,
    older_history_frame,
    updates_frame,
)
from .feed import Recent

if TYPE_CHECKING:
    from .connection import Connections, Transport


class HistoryReplay:
    """The history half of a room connection (mixed into RoomConnection, which sets these)."""

    transport: Transport
    room: Room
    closed: bool
    last_seq: int
    _hub: Connections
    _pending: list[tuple[int | None, Outbound]] | None
    _sync_lock: asyncio.Lock
    _reset_sent: bool

    def deliver(self, seq: int | None, frame: Outbound) -> None:
        raise NotImplementedError

    async def _send_history(self, since: int | None, rev: int | None = None) -> None:
        """History after ``since`` (the latest page without it), then the revisions after ``rev``.

        From what the room's feed remembers when it can (no database read),
        else from storage. Either way up to at least the feed's last seq, and
        live frames that arrive meanwhile wait, so the client sees one
        ordered stream.
        """
        async with self._sync_lock:
            if self._pending is None:
                self._pending = []
            self._reset_sent = False
            try:
                recent = self._hub.fanout.recent(self.room.id)
                if since is None:
                    await self._send_recent(recent)
                else:
                    await self._send_after(since, recent)
                if rev is not None and not self._reset_sent:
                    await self._send_revisions(rev)
            finally:
                pending, self._pending = self._pending, None
                for seq, frame in pending:
                    self.deliver(seq, frame)

    async def _send_recent(self, recent: Recent | None) -> None:
        hub = self._hub
        latest = recent.latest(hub.messages.history_limit) if recent is not None else None
        if latest is not None:
            wires, has_more = latest
            self.transport.send_text(history_frame_of(wires, has_more))
            self.last_seq = max(self.last_seq, recent.last_seq if recent is not None else 0)
            metrics.HISTORY_SERVED.labels("memory").inc()
            return
        metrics.HISTORY_SERVED.labels("feed_behind" if recent is None else "not_remembered").inc()
        messages, has_more = await hub.messages.recent(self.room.id)
        hub.fanout.remember_read(self.room.id, messages)
        self.transport.send_text(history_frame(messages, has_more))
        if messages:
            self.last_seq = max(self.last_seq, messages[-1].seq)

    async def _send_after(self, since: int, recent: Recent | None) -> None:
        hub = self._hub
        policy = hub.policy
        if recent is not None and since <= recent.last_seq:
            if recent.last_seq - since > policy.resume_max_messages:
                self._send_reset(recent.last_seq)
                return
            wires = recent.after(since)
            if wires is not None:
                for frame in history_frames_of(wires, False, policy.history_frame_max_bytes):
                    self.transport.send_text(frame)
                self.last_seq = max(self.last_seq, recent.last_seq)
                metrics.HISTORY_SERVED.labels("memory").inc()
                return
        metrics.HISTORY_SERVED.labels("feed_behind" if recent is None else "not_remembered").inc()
        stored = await hub.messages.stored_seq(self.room.id)
        if stored - since > policy.resume_max_messages or since > stored:
            # Too far behind to catch up frame by frame (seqs have no holes,
            # so this is how many it missed), or ahead of storage (history was
            # restored from an older backup): the client reloads the page,
            # which renders the latest messages, instead.
            self._send_reset(stored)
            return
        cursor = since
        while True:
            page, has_more = await hub.messages.after(self.room.id, cursor, HISTORY_PAGE_SIZE)
            for frame in history_frames(page, has_more, policy.history_frame_max_bytes):
                self.transport.send_text(frame)
            if page:
                cursor = page[-1].seq
            if not has_more or self.closed:
                hub.fanout.remember_read(self.room.id, page)
                break
        self.last_seq = max(self.last_seq, cursor)

    async def _send_revisions(self, rev: int) -> None:
        """The messages revised after ``rev``, in one ``updates`` frame, with the rev to resume from next.

        Every revision up to the feed's rev_known was stored before the feed
        saw it, so storage has it now; any later one reaches this socket live
        (it has joined the feed). So when the client is not behind the feed,
        storage need not be asked.
        """
        known = self._hub.fanout.rev_known(self.room.id)
        if known is not None and rev >= known:
            self.transport.send_text(updates_frame([], rev))
            return
        revised, more = await self._hub.messages.revised_after(self.room.id, rev, UPDATES_MAX)
        if more:
            self._send_reset(self.last_seq)  # too many to send one by one: reload
            return
        last_rev = max([known or 0, rev, *(m.rev for m in revised)])
        self.transport.send_text(updates_frame(revised, last_rev))

    def _send_reset(self, stored: int) -> None:
        self._reset_sent = True
        self.transport.send_text(history_reset_frame())
        self.last_seq = max(self.last_seq, stored)

    async def _send_older(self, frame: FetchFrame) -> None:
        """Scroll-back: the messages just before ``frame.before``, never past what this socket was sent."""
        before = min(frame.before, self.last_seq + 1)
        messages, has_more = await self._hub.messages.before(self.room.id, before, frame.limit)
        self.transport.send_text(older_history_frame(messages, has_more, before))
