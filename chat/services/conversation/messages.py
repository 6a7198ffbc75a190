"""Posting messages and reading history."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence, Sized
from typing import NamedTuple, TypeVar

from ... import metrics
from ...errors import ChatError, Forbidden, NotFound, RoomArchived, RoomGone, TooLarge, Unavailable, ValidationError
from ...models import Message, NewMessage, Revision, Room, RoomCounters, User, utcnow
from ...storage import Storage
from ..batching import Batches, batched_reads
from .formatting import Renderer
from .rendering_pool import RenderPool

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Sized)
# A page of a room's history, ascending, and whether more lie beyond it.
Page = tuple[list[Message], bool]


class PageKey(NamedTuple):
    """Which page: the latest ``limit`` messages (``since_seq`` None), or up to ``limit`` after ``since_seq``."""

    room_id: str
    since_seq: int | None
    limit: int


MAX_BODY_LENGTH = 4000
# The most messages one write stores together.
MAX_BATCH = 64
# How long a sender waits for its message to be stored before it is told to
# retry (with its client_id, which finds the message if it was stored after all).
MAX_WAIT_SECONDS = 5.0

# Stores a batch: for each message, what it became (and whether it is new),
# or the error that refused that one alone (the rest of the batch is stored).
Store = Callable[[Sequence[NewMessage]], Awaitable[Sequence[tuple[Message, bool] | ChatError]]]


def clean_body(body: str) -> str:
    """Trim and check a message body; raise ValidationError or TooLarge."""
    body = body.strip()
    if not body:
        raise ValidationError("message body is empty", field="body")
    if len(body) > MAX_BODY_LENGTH:
        raise TooLarge(f"message body is {len(body)} characters; the limit is {MAX_BODY_LENGTH}", field="body")
    return body


class GroupCommit:
    """Messages sent while the last write is under way are stored together, in one write, whatever their rooms.

    One writer per process, for every room. The first sender starts it;
    whoever sends while it writes waits for the next write, which takes
    everything that queued meanwhile (up to MAX_BATCH), in the order sent. A
    quiet process writes each message at once; a busy one pays a few round
    trips (one commit on SQLite) per batch instead of per message or per
    room: two hundred rooms with a message a second each were two hundred
    writes a second, and are now as many as the database takes in turn. A
    busy room's messages then reach each socket together, in one write
    (chat.web.transport).

    A message is known by (room, user, client_id): a resend of one queued or
    being written waits for that write instead of queueing again. Clients
    resend what was not acked; while storage is slow, resends would
    otherwise pile up faster than it can write them (each costs a write that
    finds the original), and the room would never catch up. A write that
    finds storage unreachable fails what queued behind it too: a sender's
    later message must not be stored before the one it resends
    (chat.services.realtime.sending.SendHold).
    """

    def __init__(
        self,
        store: Store,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.max_wait = max_wait
        self._batches: Batches[tuple[str, str, str], NewMessage, tuple[Message, bool]] = Batches(
            store,
            max_batch=max_batch,
            join_in_flight=True,
            fail_queued_on=(Unavailable,),
            name="messages",
        )

    def submit(self, new: NewMessage) -> Awaitable[tuple[Message, bool]]:
        """Queue ``new`` now (so its place in the room's order is taken now); await the result.

        Waiting is shielded and bounded: a sender that gives up (or whose
        socket closes) leaves the write alone, since the others in its batch
        still need it.
        """
        return self._batches.outcome((new.room_id, new.user_id, new.client_id), new, self.max_wait)


class Messages:
    def __init__(self, storage: Storage, history_limit: int = 50, render_pool: RenderPool | None = None) -> None:
        self._storage = storage
        self.history_limit = history_limit
        # Without a pool (tests, tools), Markdown is rendered on the loop.
        self._renderer = Renderer(storage.users.get_by_username, pool=render_pool)
        self._commits = GroupCommit(self._store)
        # A page of history asked for by several sockets of a room at once (a
        # restart brings them back together) is read once for all of them.
        self._page_reads: Batches[PageKey, PageKey, Page] = Batches(
            self._read_pages, max_batch=8, lane_of=lambda key: key.room_id, name="history reads"
        )
        # A room's counters, asked by every socket of it that comes back after
        # a restart: read together, always after any write acknowledged before.
        self._counter_reads = batched_reads(lambda ids: self._storage.messages.counters(ids), name="counter look-ups")

    async def _store(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool] | ChatError]:
        try:
            stored = await self._storage.messages.add_many(news)
        except (RoomArchived, RoomGone) as exc:
            # A batch of several rooms stores the others' messages
            # still; only the senders to archived or deleted rooms are refused.
            others = [new for new in news if new.room_id not in exc.room_ids]
            if not others:
                raise
            stored_others = iter(await self._store(others))
            refusal = type(exc)
            return [refusal([new.room_id]) if new.room_id in exc.room_ids else next(stored_others) for new in news]
        results: list[tuple[Message, bool] | ChatError] = list(stored)
        metrics.MESSAGES_STORED.inc(sum(1 for _, created in stored if created))
        mentions = [
            (message.room_id, user_id, message.seq)
            for new, (message, created) in zip(news, stored, strict=True)
            if created
            for user_id in new.mentions
        ]
        # Writing a message is reading the room up to it: its author never
        # finds their own words unread, even from a tab closed right after sending.
        read_up_to: dict[tuple[str, str], int] = {}
        for message, created in stored:
            if created:
                key = (message.room_id, message.user_id)
                read_up_to[key] = max(read_up_to.get(key, 0), message.seq)
        # Both at once: neither depends on the other, and the senders wait for both.
        await asyncio.gather(
            self._after_storing("recording %d mentions", self._storage.mentions.add_many, mentions),
            self._after_storing(
                "moving %d authors' read markers", self._storage.memberships.advance_read_many, read_up_to
            ),
        )
        return results

    @staticmethod
    async def _after_storing(what: str, write: Callable[[T], Awaitable[None]], items: T) -> None:
        """A write that follows stored messages; if it fails they are still stored and acked, only a count is off."""
        if not items:
            return
        try:
            await write(items)
        except Unavailable as exc:
            log.warning(what + " failed: %s", len(items), exc)

    async def prepare(self, user: User, room: Room, client_id: str, body: str) -> NewMessage:
        """Check a message and render its body (raises ValidationError or TooLarge).

        Whether the room is archived is storage's to say when it stores: a
        socket's copy of the room is as old as the socket.
        """
        body = clean_body(body)
        html, mentions = await self._renderer.render_with_mentions(body)
        return NewMessage(
            room_id=room.id,
            user_id=user.id,
            username=user.username,
            body=body,
            client_id=client_id,
            html=html,
            mentions=mentions,
        )

    def submit(self, new: NewMessage) -> Awaitable[tuple[Message, bool]]:
        """Queue a prepared message for storing now; the awaitable gives what :meth:`post` returns.

        Messages submitted one after the other are stored in that order, so a
        client's next message need not wait for the last one's ack.
        """
        return self._commits.submit(new)

    async def recent(self, room_id: str) -> tuple[list[Message], bool]:
        """The room's latest ``history_limit`` messages, ascending, and whether older ones exist."""
        key = PageKey(room_id, None, self.history_limit)
        messages, more = await self._page_reads.outcome(key, key)
        return list(messages), more  # the page is shared by every asker: each gets its own list

    async def before(self, room_id: str, before_seq: int, limit: int) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages just before ``before_seq``, ascending, and whether older ones exist.

        Seqs have no holes, so the page is the seqs ``before_seq - limit`` up
        to ``before_seq - 1``: read with the same query (and index) as a
        resume, whatever the backend.
        """
        first = max(1, before_seq - limit)
        count = before_seq - first
        if count <= 0:
            return [], False
        page, _ = await self._storage.messages.after(room_id, first - 1, count)
        return [m for m in page if m.seq < before_seq], first > 1

    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages after ``since_seq``, ascending, and whether more follow.

        Like :meth:`recent`, read once for every socket of the room that asks
        for the same page at once (a restart brings a room's sockets back
        together, most of them resuming from the same seq). The read starts
        after the ask, so it holds every message acknowledged before.
        """
        key = PageKey(room_id, since_seq, limit)
        messages, more = await self._page_reads.outcome(key, key)
        return list(messages), more  # the page is shared by every asker: each gets its own list

    async def _read_pages(self, keys: list[PageKey]) -> list[Page | Exception]:
        pages = await asyncio.gather(*map(self._read_page, keys), return_exceptions=True)
        outcomes: list[Page | Exception] = []
        for page in pages:
            if isinstance(page, BaseException) and not isinstance(page, Exception):
                raise page  # cancelled: shutting down
            outcomes.append(page)
        return outcomes

    async def _read_page(self, key: PageKey) -> Page:
        if key.since_seq is None:
            return await self._storage.messages.latest(key.room_id, key.limit)
        return await self._storage.messages.after(key.room_id, key.since_seq, key.limit)

    async def stored_seq(self, room_id: str) -> int:
        """The room's counter: every message acknowledged (and so every one published) is at or below it."""
        return (await self._room_counters(room_id)).seq

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        """Each room's seq and rev counters, in one query."""
        if len(room_ids) == 1:
            # One room's, as every room's feed reads when its first socket
            # joins: in a storm of joins, read together with the others.
            (room_id,) = room_ids
            found = await self._counter_reads.outcome(room_id, room_id)
            return {room_id: found} if found is not None else {}
        return await self._storage.messages.counters(room_ids)

    async def stored_rev(self, room_id: str) -> int:
        """The room's rev counter: a page read after it, resuming from it, misses no edit."""
        return (await self._room_counters(room_id)).rev

    async def _room_counters(self, room_id: str) -> RoomCounters:
        return await self._counter_reads.outcome(room_id, room_id) or RoomCounters()

    async def edit(self, user: User, room: Room, message_id: str, body: str) -> Message:
        """Replace the body of ``user``'s own message; Forbidden for anyone else's (RoomArchived: storage's word)."""
        message = await self._own(user, room, message_id)
        if message.deleted_at is not None:
            raise ValidationError("that message was deleted", field="body")
        body = clean_body(body)
        if body == message.body:
            return message  # nothing changes: no new rev, nothing to tell the room
        return await self._revise(Revision(room.id, message.id, body, utcnow(), await self._renderer.render(body)))

    async def delete(self, user: User, room: Room, message_id: str, *, as_moderator: bool = False) -> Message:
        """Delete ``user``'s own message (it keeps its place, its body goes); Forbidden for anyone else's.

        ``as_moderator``: anyone's (the caller checked that ``user`` moderates the room).
        """
        message = await self._find(room, message_id) if as_moderator else await self._own(user, room, message_id)
        if message.deleted_at is not None:
            return message  # deleted already: deleting again changes nothing
        return await self._revise(Revision(room.id, message.id, None, utcnow()))

    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        return await self._storage.messages.revised_after(room_id, rev, limit)

    async def _find(self, room: Room, message_id: str) -> Message:
        message = await self._storage.messages.get(room.id, message_id)
        if message is None:
            raise NotFound("no such message in this room")
        return message

    async def _own(self, user: User, room: Room, message_id: str) -> Message:
        message = await self._find(room, message_id)
        if message.user_id != user.id:
            raise Forbidden("only its author may change a message")
        return message

    async def _revise(self, revision: Revision) -> Message:
        revised = await self._storage.messages.revise(revision)
        if revised is None:
            raise NotFound("no such message in this room")
        return revised

    async def backfill(self, room_id: str, since_seq: int) -> list[Message]:
        messages, _ = await self._storage.messages.after(room_id, since_seq, 1000)
        return messages
