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
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from ... import metrics
from ...broker import RESYNC, Broker, BrokerClosed, Event, room_channel
from ...errors import Unavailable
from ...models import Message, RoomCounters
from ...wire.events import frame_routing
from ...wire.server import (
    message_frame,
    message_updated_frame,
)
from .feed import Listener, Recent, RoomFeed

log = logging.getLogger(__name__)

# Called with the room id and the event's text for a control event in a room
# this process serves; must not block.
ControlHandler = Callable[[str, str], None]
# A room's messages revised after a rev, by ascending rev: (page, more follow).
RevisedAfter = Callable[[str, int, int], Awaitable[tuple[list[Message], bool]]]


class RoomLog(Protocol):
    """What the fan-out reads of rooms' stored messages to fill what the broker failed to carry.

    chat.services.conversation.messages.Messages is the one in production.
    """

    async def backfill(self, room_id: str, since_seq: int) -> list[Message]:
        """The room's stored messages with seq > ``since_seq``, in order."""

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        """Each room's seq and rev counters, in one query."""

    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        """The room's messages revised after ``rev``, by ascending rev, and whether more follow."""


# Every this many sweeps, rooms still talking are compared with storage too
# (a lost edit in a busy room shows no gap; see Fanout._sweep).
FULL_SWEEP_EVERY = 6
# How long a publish that failed is retried in the background.
REPUBLISH_FOR_SECONDS = 60.0


class Fanout:
    """The process-wide hub between the broker and local sockets."""

    def __init__(
        self,
        broker: Broker,
        log: RoomLog,
        *,
        remember: int = 0,
        gap_retry: float = 0.2,
        sweep_interval: float = 10.0,
    ) -> None:
        self.broker = broker
        # Storage, where the broker failed to carry something: missed
        # messages (gaps, a resync, the sweep) and revisions (edits, deletions).
        self.log = log
        # A room's latest messages kept in memory, learned from what the
        # first joiner read and from what is delivered afterwards.
        self.remember = remember
        self.gap_retry = gap_retry
        self.sweep_interval = sweep_interval
        self._background: set[asyncio.Task[None]] = set()
        # Set when the process is going away: a room its last socket leaves is
        # not unsubscribed one by one (the broker disconnects next).
        self.going_away = False
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
                counted = (await self.log.counters([room_id])).get(room_id, RoomCounters())
                feed.start_at(counted.seq, counted.rev)
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
        if self.going_away:
            return  # the broker's connection closes with every subscription on it
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

        Only the rooms quiet since the last sweep, and every room on every
        ``FULL_SWEEP_EVERY``-th: in a room still talking, a lost message shows
        as a gap at the next one (and the feed fills it), while its counter,
        read there, is usually ahead of a publish still on its way, and each
        such room was read again from storage for nothing (in the cluster,
        200 busy rooms made a stall of the whole process every sweep). A lost
        message in a room that then falls silent is caught one sweep later.
        """
        delivered: dict[str, tuple[int, int]] = {}
        for sweep in itertools.count(1):
            await asyncio.sleep(self.sweep_interval)
            feeds = [feed for feed in self._feeds.values() if feed.ready.is_set() and feed.listeners]
            now = {feed.room_id: (feed.last_seq, feed.rev_known) for feed in feeds}
            if sweep % FULL_SWEEP_EVERY:
                feeds = [feed for feed in feeds if delivered.get(feed.room_id) == now[feed.room_id]]
            delivered = now
            if feeds:
                await self._check_feeds(feeds)

    async def _check_feeds(self, feeds: Sequence[RoomFeed]) -> None:
        """Compare the feeds' rooms' counters with what they delivered, in one query; catch up where behind."""
        try:
            counted = await self.log.counters([feed.room_id for feed in feeds])
        except Exception as exc:
            log.warning("sweep of %d rooms failed: %s", len(feeds), exc)
            return
        for feed in feeds:
            room = counted.get(feed.room_id, RoomCounters())
            if room.seq > feed.last_seq:
                feed.resync()
            feed.check_revisions(room.rev, self.log.revised_after)

    async def publish_control(self, room_id: str, event: str) -> None:
        """Send a control event to every process serving the room (this one included)."""
        await self.broker.publish(room_channel(room_id), event)

    async def publish_control_to_each(self, room_ids: Collection[str], event: str) -> None:
        """:meth:`publish_control` to many rooms, in a few round trips."""
        await self.broker.publish_many([(room_channel(room_id), event) for room_id in room_ids])

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
            if ready:
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
