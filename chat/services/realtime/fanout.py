"""One listener per process that turns broker events into ordered local deliveries.

Every socket in this process that is in a room registers a :class:`Listener`
with the room's :class:`RoomFeed`. The process subscribes to the room's broker
channel when the first local listener joins and unsubscribes when the last one
leaves. Each broker event is parsed once and its ready-made frame text is
handed to every listener as one :class:`~chat.wire.Outbound`, so neither
serialization nor framing grows with the number of sockets: each transport
writes the bytes the first one built.

Message frames carry a ``seq``. A feed delivers them in ``seq`` order and at
most once, whatever order the broker produced: publishes from concurrent
senders can overtake each other. When a seq is missing the feed holds later
frames back briefly and asks storage for what it missed. It never skips a
gap: seqs have no holes and N+1 is only stored after N, so storage has the
missing message, and delivering past it would hide it from every connected
client for good. While storage cannot be read, the feed keeps asking, backing
off, and the room's later messages wait (in order) until it answers.

Pub/sub is at most once, so storage is the fallback everywhere: after the
broker reconnects (``RESYNC``), when a publish fails (delivered locally at
once, re-published in the background), and on a periodic sweep that compares
each room's stored seq with the last one delivered.

The fan-out routes; it does not interpret. Frames without a seq go to every
local listener as they are; a frame whose ``type`` has a registered control
handler (see :meth:`Fanout.on_control`) goes to that handler instead of to the
sockets, which is how other services (presence) talk between processes over
the room's channel without the fan-out knowing them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ... import metrics
from ...broker import RESYNC, Broker, BrokerClosed, Event, room_channel
from ...errors import Unavailable
from ...models import Message, RoomCounters
from ...wire.events import frame_routing
from ...wire.server import (
    UPDATES_MAX,
    Outbound,
    message_frame,
    message_frame_of_update,
    message_updated_frame,
    wire_of_message_frame,
)

log = logging.getLogger(__name__)

# Fetch stored messages of a room with seq > after_seq, in order.
Backfill = Callable[[str, int], Awaitable[list[Message]]]
# The highest seq stored in a room so far.
StoredSeq = Callable[[str], Awaitable[int]]
# The same for many rooms at once (one query), by room id.
StoredSeqs = Callable[[Collection[str]], Awaitable[dict[str, int]]]
# Called with the room id and the event's text for a control event in a room
# this process serves; must not block.
ControlHandler = Callable[[str, str], None]
# Many rooms' seq and rev counters in one query, by room id.
Counters = Callable[[Collection[str]], Awaitable[dict[str, RoomCounters]]]
# A room's messages revised after a rev, by ascending rev: (page, more follow).
RevisedAfter = Callable[[str, int, int], Awaitable[tuple[list[Message], bool]]]


# After a failed catch-up read, how long until the next try.
RESYNC_RETRY_SECONDS = 1.0
# The longest wait between two reads of storage for a missing seq.
MAX_FILL_DELAY_SECONDS = 5.0
# How long a publish that failed is retried in the background.
REPUBLISH_FOR_SECONDS = 60.0


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
            missed = await self._fanout.backfill(self.room_id, self.last_seq)
        except Exception:
            # Storage is down too; held frames still get delivered once their
            # hole times out, and the fill is retried until it succeeds.
            log.warning("backfill of room %s after seq %d failed; retrying", self.room_id, self.last_seq, exc_info=True)
            return []
        self._resync_due = False
        return missed

    def close(self) -> None:
        for task in (self._fill_task, self._revision_task):
            if task is not None:
                task.cancel()


class Fanout:
    """The process-wide hub between the broker and local sockets."""

    def __init__(
        self,
        broker: Broker,
        backfill: Backfill,
        stored_seq: StoredSeq,
        *,
        stored_seqs: StoredSeqs | None = None,
        counters: Counters | None = None,
        revised_after: RevisedAfter | None = None,
        remember: int = 0,
        gap_retry: float = 0.2,
        sweep_interval: float = 10.0,
    ) -> None:
        self.broker = broker
        self.backfill = backfill
        self.stored_seq = stored_seq
        self.stored_seqs = stored_seqs
        # With both, feeds also keep up with revisions (edits, deletions)
        # that the broker failed to carry.
        self.counters = counters
        self.revised_after = revised_after
        # A room's latest messages kept in memory, learned from what the
        # first joiner read and from what is delivered afterwards.
        self.remember = remember
        self.gap_retry = gap_retry
        self.sweep_interval = sweep_interval
        self._background: set[asyncio.Task[None]] = set()
        self._feeds: dict[str, RoomFeed] = {}
        self._listen_task: asyncio.Task[None] | None = None
        self._control_handlers: dict[str, ControlHandler] = {}
        # Process-wide channels (not rooms): channel -> (on_event, on_resync).
        self._watched: dict[str, tuple[Callable[[str], None], Callable[[], None] | None]] = {}

    async def watch(
        self, channel: str, on_event: Callable[[str], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        """Hand every payload published on ``channel`` to ``on_event``, for as long as the process runs.

        ``on_resync`` is called after the broker lost and regained its
        subscriptions: whatever was published meanwhile is gone.
        """
        self._watched[channel] = (on_event, on_resync)
        await self.broker.subscribe(channel)

    async def unwatch(self, channel: str) -> None:
        """Stop handing ``channel``'s payloads on (see :meth:`watch`)."""
        if self._watched.pop(channel, None) is not None:
            await self.broker.unsubscribe(channel)

    def on_control(self, kind: str, handler: ControlHandler) -> None:
        """Hand broker frames of type ``kind`` to ``handler`` instead of to the sockets."""
        self._control_handlers[kind] = handler

    async def start(self) -> None:
        if self._listen_task is None:
            self._listen_task = asyncio.create_task(self._listen(), name="fanout-listener")
            sweeper = asyncio.create_task(self._sweep(), name="fanout-sweep")
            self._background.add(sweeper)
            sweeper.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        tasks = [t for t in (self._listen_task, *self._background) if t is not None]
        self._listen_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for feed in self._feeds.values():
            feed.close()
        self._feeds.clear()

    def rooms_with_listeners(self) -> int:
        """How many rooms this process delivers to (a feed with at least one socket)."""
        return sum(1 for feed in self._feeds.values() if feed.listeners)

    def local_listeners(self, room_id: str) -> int:
        feed = self._feeds.get(room_id)
        return len(feed.listeners) if feed else 0

    async def join(self, room_id: str, listener: Listener) -> None:
        """Start delivering the room's frames to ``listener``.

        Subscribes first and reads the stored seq second, so nothing published
        in between is missed; the caller then sends history up to at least
        that seq.
        """
        feed = self._feeds.get(room_id)
        if feed is None:
            feed = self._feeds[room_id] = RoomFeed(room_id, self, self.remember)
            try:
                await self.broker.subscribe(room_channel(room_id))
                if self.counters is not None:
                    counted = (await self.counters([room_id])).get(room_id, RoomCounters())
                    feed.start_at(counted.seq, counted.rev)
                else:
                    feed.start_at(await self.stored_seq(room_id))
            except BaseException:
                del self._feeds[room_id]
                feed.ready.set()  # wake joiners waiting on this attempt; they retry
                raise
        await feed.ready.wait()
        if self._feeds.get(room_id) is not feed:
            await self.join(room_id, listener)
            return
        feed.listeners.add(listener)

    def recent(self, room_id: str) -> Recent | None:
        """What this process remembers of the room's latest messages (see :class:`Recent`).

        None when the room has no feed here (only a listener that joined it
        may rely on live frames for what comes after ``last_seq``), or when
        the feed may be behind for longer than a moment: it is waiting for a
        missing seq, or the broker's subscription is down or was just
        restored. Then storage answers, as complete as it was before.
        """
        feed = self._feeds.get(room_id)
        if feed is None or not feed.ready.is_set() or not feed.current or not self.broker.receiving:
            return None
        return feed.recent()

    def remember_read(self, room_id: str, messages: Sequence[Message]) -> None:
        """Messages a listener read from storage, so the next joiner need not."""
        feed = self._feeds.get(room_id)
        if feed is not None and feed.ready.is_set():
            feed.remember(messages)

    async def leave(self, room_id: str, listener: Listener) -> None:
        feed = self._feeds.get(room_id)
        if feed is None:
            return
        feed.listeners.discard(listener)
        if not feed.listeners and feed.ready.is_set():
            del self._feeds[room_id]
            feed.close()
            await self.broker.unsubscribe(room_channel(room_id))

    def rev_known(self, room_id: str) -> int | None:
        """The room's feed's :attr:`RoomFeed.rev_known`; None without a feed here."""
        feed = self._feeds.get(room_id)
        return feed.rev_known if feed is not None and feed.ready.is_set() else None

    async def publish_revision(self, message: Message) -> None:
        """Tell every process serving the room that ``message`` was edited or deleted (never raises).

        Like :meth:`publish_message`: on a broker outage this process's
        sockets are told at once and the publish is retried in the
        background; the other processes' sweeps read it from storage.
        """
        channel, frame = room_channel(message.room_id), message_updated_frame(message)
        try:
            await self.broker.publish(channel, frame)
        except Unavailable as exc:
            log.warning("publishing rev %d of room %s failed (%s); retrying", message.rev, message.room_id, exc)
            feed = self._feeds.get(message.room_id)
            if feed is not None and feed.ready.is_set():
                feed.receive_revision(message.seq, message.rev, frame)
            self._spawn(self._republish(channel, frame))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish_message(self, message: Message) -> None:
        """Send a stored message to every process with sockets in its room.

        Never raises for a broker outage: the message is stored and maybe
        acknowledged, so this process delivers it to its own sockets at once
        and keeps retrying the publish in the background; other processes
        also catch up from storage when their subscription comes back.
        """
        channel, frame = room_channel(message.room_id), message_frame(message)
        try:
            await self.broker.publish(channel, frame)
        except Unavailable as exc:
            log.warning(
                "publishing seq %d of room %s failed (%s); retrying in the background",
                message.seq,
                message.room_id,
                exc,
            )
            feed = self._feeds.get(message.room_id)
            if feed is not None and feed.ready.is_set():
                feed.receive(message.seq, frame)
            self._spawn(self._republish(channel, frame))

    async def _republish(self, channel: str, frame: str) -> None:
        delay = 0.2
        deadline = asyncio.get_running_loop().time() + REPUBLISH_FOR_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(delay)
            try:
                await self.broker.publish(channel, frame)
                return
            except Unavailable:
                delay = min(delay * 2, 5.0)
        log.warning("gave up publishing a frame on %s; receivers will catch up from storage", channel)

    async def _sweep(self) -> None:
        """Now and then, compare each room's stored seq (and rev) with what was delivered.

        Catches the one loss nothing else sees: a process killed after storing
        (and acking) a message or an edit but before publishing it, in a room
        where nobody writes again for a while. One query for every room this
        process serves, not one per room: with thousands of rooms, per-room
        reads every few seconds were most of what the database did.
        """
        while True:
            await asyncio.sleep(self.sweep_interval)
            feeds = [feed for feed in self._feeds.values() if feed.ready.is_set() and feed.listeners]
            if not feeds:
                continue
            await self._check_feeds(feeds)

    async def _check_feeds(self, feeds: Sequence[RoomFeed]) -> None:
        """Compare the feeds' rooms' counters with what they delivered, in one query; catch up where behind."""
        try:
            if self.counters is not None:
                counted = await self.counters([feed.room_id for feed in feeds])
                stored = {room_id: counters.seq for room_id, counters in counted.items()}
            elif self.stored_seqs is not None:
                counted, stored = {}, await self.stored_seqs([feed.room_id for feed in feeds])
            else:
                counted, stored = {}, {feed.room_id: await self.stored_seq(feed.room_id) for feed in feeds}
        except Exception as exc:
            log.warning("sweep of %d rooms failed: %s", len(feeds), exc)
            return
        for feed in feeds:
            if stored.get(feed.room_id, 0) > feed.last_seq:
                feed.resync()
            if feed.room_id in counted and self.revised_after is not None:
                feed.check_revisions(counted[feed.room_id].rev, self.revised_after)

    async def publish_control(self, room_id: str, event: str) -> None:
        """Send a control event to every process serving the room (this one included)."""
        await self.broker.publish(room_channel(room_id), event)

    async def announce(self, room_id: str, event: str) -> None:
        """A control event every process serving the room must hear (a removal); never raises.

        This process acts on it at once (its own copy would come back through
        the broker, or not at all while the broker is down); the publish is
        retried in the background through an outage. Handlers of such events
        must not mind hearing one twice.
        """
        handler = self._control_handlers.get(frame_routing(event).kind)
        if handler is not None:
            handler(room_id, event)
        await self.publish_with_retry(room_channel(room_id), event)

    async def publish_with_retry(self, channel: str, payload: str) -> None:
        """Publish, and on a broker outage keep retrying in the background (for a while); never raises."""
        try:
            await self.broker.publish(channel, payload)
        except Unavailable as exc:
            log.warning("publishing on %s failed (%s); retrying in the background", channel, exc)
            self._spawn(self._republish(channel, payload))

    async def publish_ephemeral(self, room_id: str, frame: str) -> None:
        """Send a frame without seq (a typing notice) to every socket of the room, on every process.

        Best effort, like the notice itself: a broker outage loses it and says nothing.
        """
        try:
            await self.broker.publish(room_channel(room_id), frame)
        except Unavailable as exc:
            log.info("a notice for room %s was lost: %s", room_id, exc)

    def deliver_local(self, room_id: str, frame: str) -> None:
        """Hand a frame without seq to this process's sockets in the room only."""
        feed = self._feeds.get(room_id)
        if feed is not None and feed.ready.is_set():
            feed.receive(None, frame)

    async def _listen(self) -> None:
        while True:
            try:
                event = await self.broker.next_published()
            except BrokerClosed:
                return
            except Exception:
                # The broker backend reconnects on its own; keep listening.
                log.warning("broker listener error; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            try:
                self._route(event)
            except Exception:
                # One bad event or handler must not stop this process's only listener.
                log.exception("routing an event on %s failed", event.channel)

    def _route(self, event: Event) -> None:
        if event is RESYNC:
            metrics.BROKER_RESYNCS.inc()
            ready = [each for each in self._feeds.values() if each.ready.is_set()]
            for each in ready:
                each.resync()
            if ready and self.counters is not None:
                self._spawn(self._check_feeds(ready))  # revisions published meanwhile are gone too
            for _, on_resync in self._watched.values():
                if on_resync is not None:
                    on_resync()
            return
        watcher = self._watched.get(event.channel)
        if watcher is not None:
            watcher[0](event.payload)
            return
        prefix = room_channel("")
        feed = self._feeds.get(event.channel[len(prefix) :]) if event.channel.startswith(prefix) else None
        if feed is None or not feed.ready.is_set():
            return
        try:
            routing = frame_routing(event.payload)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping malformed frame on %s", event.channel)
            return
        handler = self._control_handlers.get(routing.kind)
        if handler is not None:
            handler(feed.room_id, event.payload)
        elif routing.rev is not None and routing.seq is not None:
            feed.receive_revision(routing.seq, routing.rev, event.payload)
        else:
            feed.receive(routing.seq, event.payload, routing.author)
