"""Ordered, duplicate-free delivery from the broker to local listeners."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
from collections.abc import AsyncIterator, Collection

import pytest

from chat.broker import room_channel
from chat.broker.memory import MemoryBroker
from chat.models import Message, RoomCounters
from chat.services.realtime import fanout as fanout_module
from chat.services.realtime.fanout import Fanout
from chat.wire.server import Outbound, message_frame, message_wire
from tests.support.fakes import RecordingListener, listeners_in
from tests.support.waiting import eventually

ROOM = "room-1"
MOMENT = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def msg(seq: int, room_id: str = ROOM) -> Message:
    return Message(
        id=f"m{seq}",
        room_id=room_id,
        seq=seq,
        user_id="u1",
        username="alice",
        body=f"message {seq}",
        created_at=MOMENT,
        client_id=f"c{seq}",
    )


class BrokenListener:
    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, seq: int | None, frame: Outbound) -> None:
        self.calls += 1
        raise RuntimeError("socket exploded")


class FakeStore:
    """Stands in for the Messages service (a RoomLog): what is stored, and who asked."""

    def __init__(self, stored_seq: int = 0) -> None:
        self.messages: list[Message] = []
        self.seq = stored_seq
        self.rev = 0
        self.revised: dict[int, Message] = {}  # seq -> latest version
        self.backfill_calls: list[tuple[str, int]] = []
        self.counter_calls: list[list[str]] = []
        self.revised_calls: list[int] = []

    async def backfill(self, room_id: str, since_seq: int) -> list[Message]:
        self.backfill_calls.append((room_id, since_seq))
        return [m for m in self.messages if m.room_id == room_id and m.seq > since_seq]

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        self.counter_calls.append(sorted(room_ids))
        return dict.fromkeys(room_ids, RoomCounters(self.seq, self.rev))

    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        self.revised_calls.append(rev)
        found = sorted((m for m in self.revised.values() if m.rev > rev), key=lambda m: m.rev)
        return found[:limit], len(found) > limit

    def revise(self, seq: int, body: str) -> Message:
        self.rev += 1
        self.revised[seq] = dataclasses.replace(msg(seq), body=body, rev=self.rev)
        return self.revised[seq]


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.subscribe_calls: list[str] = []
        self.unsubscribe_calls: list[str] = []

    async def subscribe(self, channel: str) -> None:
        self.subscribe_calls.append(channel)
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribe_calls.append(channel)
        await super().unsubscribe(channel)


@pytest.fixture
def broker() -> CountingBroker:
    return CountingBroker()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def fanout(broker: CountingBroker, store: FakeStore) -> AsyncIterator[Fanout]:
    hub = Fanout(broker, store, gap_retry=0.01)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def publish(broker: MemoryBroker, *seqs: int) -> None:
    for seq in seqs:
        await broker.publish(room_channel(ROOM), message_frame(msg(seq)))


async def test_frames_published_out_of_order_are_delivered_in_order(fanout: Fanout, broker: CountingBroker) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await publish(broker, 2, 1)

    await eventually(lambda: len(listener.received) == 2)
    assert listener.seqs == [1, 2]
    assert [frame for _, frame in listener.received] == [message_frame(msg(1)), message_frame(msg(2))]


async def test_duplicates_are_delivered_once(fanout: Fanout, broker: CountingBroker) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await publish(broker, 1, 1, 3, 2, 3, 2, 1, 4)

    await eventually(lambda: listener.seqs[-1:] == [4])
    await asyncio.sleep(0.05)
    assert listener.seqs == [1, 2, 3, 4]


async def test_frames_at_or_below_the_stored_seq_at_join_are_skipped(
    broker: CountingBroker, store: FakeStore, fanout: Fanout
) -> None:
    store.seq = 5  # history up to 5 is the caller's to send
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await publish(broker, 4, 5, 6)

    await eventually(lambda: listener.seqs == [6])


async def test_non_message_frames_are_delivered_immediately(fanout: Fanout, broker: CountingBroker) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await publish(broker, 2)  # held back: seq 1 is missing
    await broker.publish(room_channel(ROOM), '{"type":"presence","count":3}')

    await eventually(lambda: len(listener.received) >= 1)
    assert listener.received[0] == (None, '{"type":"presence","count":3}')


async def test_a_gap_is_never_skipped_later_messages_wait_until_storage_has_the_missing_one(
    fanout: Fanout, broker: CountingBroker, store: FakeStore
) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)
    await publish(broker, 1)
    await eventually(lambda: listener.seqs == [1])
    store.messages = [msg(1)]

    await publish(broker, 3)  # 2's publish was lost, and storage has not answered with it yet
    await eventually(lambda: len(store.backfill_calls) >= 3, what="storage asked again and again")
    assert listener.seqs == [1]

    store.messages = [msg(1), msg(2), msg(3)]
    await eventually(lambda: listener.seqs == [1, 2, 3], what="the gap closed, in order")
    assert all(call == (ROOM, 1) for call in store.backfill_calls)


async def test_a_gap_is_filled_from_storage_in_order(fanout: Fanout, broker: CountingBroker, store: FakeStore) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)
    await publish(broker, 1)
    await eventually(lambda: listener.seqs == [1])
    # 2 and 3 were stored, but their publishes were lost.
    store.messages = [msg(1), msg(2), msg(3), msg(4)]

    await publish(broker, 4)

    await eventually(lambda: listener.seqs == [1, 2, 3, 4])
    assert store.backfill_calls[0] == (ROOM, 1)
    assert [frame for _, frame in listener.received] == [message_frame(msg(s)) for s in (1, 2, 3, 4)]
    await asyncio.sleep(0.05)
    assert listener.seqs == [1, 2, 3, 4]  # the live 4 was not delivered a second time


async def test_a_failing_backfill_is_retried_with_backoff_and_nothing_passes_the_gap_meanwhile(
    fanout: Fanout, broker: CountingBroker, store: FakeStore
) -> None:
    original = store.backfill
    down = True

    async def backfill(room_id: str, after_seq: int) -> list[Message]:
        if down:
            store.backfill_calls.append((room_id, after_seq))
            raise ConnectionError("database down")
        return await original(room_id, after_seq)

    fanout.backfill = backfill
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await publish(broker, 2)
    await eventually(lambda: len(store.backfill_calls) >= 3, what="retries")
    assert listener.seqs == []

    store.messages = [msg(1), msg(2)]
    down = False
    await eventually(lambda: listener.seqs == [1, 2], 5, "delivery once storage answers")


async def test_join_subscribes_once_for_many_listeners_and_the_last_leave_unsubscribes(
    fanout: Fanout, broker: CountingBroker, store: FakeStore
) -> None:
    channel = room_channel(ROOM)
    listeners = [RecordingListener() for _ in range(3)]

    for listener in listeners:
        await fanout.join(ROOM, listener)

    assert broker.subscribe_calls == [channel]
    assert channel in broker._subscribed
    assert store.counter_calls == [[ROOM]]
    assert listeners_in(fanout, ROOM) == 3

    await fanout.leave(ROOM, listeners[0])
    await fanout.leave(ROOM, listeners[1])
    assert channel in broker._subscribed
    assert listeners_in(fanout, ROOM) == 1

    await fanout.leave(ROOM, listeners[2])
    assert channel not in broker._subscribed
    assert broker.unsubscribe_calls == [channel]
    assert listeners_in(fanout, ROOM) == 0


async def test_concurrent_joins_subscribe_once(fanout: Fanout, broker: CountingBroker) -> None:
    listeners = [RecordingListener() for _ in range(5)]

    await asyncio.gather(*(fanout.join(ROOM, listener) for listener in listeners))

    assert broker.subscribe_calls == [room_channel(ROOM)]
    assert listeners_in(fanout, ROOM) == 5


async def test_every_listener_in_the_room_gets_each_frame(fanout: Fanout, broker: CountingBroker) -> None:
    listeners = [RecordingListener() for _ in range(3)]
    for listener in listeners:
        await fanout.join(ROOM, listener)

    await publish(broker, 1, 2)

    await eventually(lambda: all(listener.seqs == [1, 2] for listener in listeners))


async def test_rooms_are_delivered_independently(fanout: Fanout, broker: CountingBroker) -> None:
    here, there = RecordingListener(), RecordingListener()
    await fanout.join(ROOM, here)
    await fanout.join("room-2", there)

    await broker.publish(room_channel("room-2"), message_frame(msg(1, "room-2")))
    await publish(broker, 1)

    await eventually(lambda: here.seqs == [1] and there.seqs == [1])
    assert '"room-2"' in there.received[0][1] and '"room-2"' not in here.received[0][1]


async def test_a_listener_that_left_gets_nothing_more(fanout: Fanout, broker: CountingBroker) -> None:
    staying, leaving = RecordingListener(), RecordingListener()
    await fanout.join(ROOM, staying)
    await fanout.join(ROOM, leaving)

    await fanout.leave(ROOM, leaving)
    await publish(broker, 1)

    await eventually(lambda: staying.seqs == [1])
    assert leaving.received == []


async def test_a_listener_whose_deliver_raises_does_not_stop_the_others(fanout: Fanout, broker: CountingBroker) -> None:
    broken = BrokenListener()
    first, last = RecordingListener(), RecordingListener()
    await fanout.join(ROOM, first)
    await fanout.join(ROOM, broken)
    await fanout.join(ROOM, last)

    await publish(broker, 1, 2)

    await eventually(lambda: first.seqs == [1, 2] and last.seqs == [1, 2])
    assert broken.calls == 2


async def test_malformed_broker_payloads_are_dropped(fanout: Fanout, broker: CountingBroker) -> None:
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await broker.publish(room_channel(ROOM), "not json")
    await broker.publish(room_channel(ROOM), '{"type":"message","message":{}}')
    await publish(broker, 1)

    await eventually(lambda: listener.seqs == [1])


async def test_stop_ends_the_listener_and_forgets_every_room(fanout: Fanout, broker: CountingBroker) -> None:
    await fanout.join(ROOM, RecordingListener())

    await fanout.stop()

    assert listeners_in(fanout, ROOM) == 0


# -- what a feed remembers, so that joiners need no database read ---------------


class SweptStore(FakeStore):
    """A store holding messages 1 to ``stored``."""

    def __init__(self, stored: int) -> None:
        super().__init__(stored)
        self.messages = [msg(seq) for seq in range(1, stored + 1)]


@pytest.fixture
async def remembering(broker: CountingBroker) -> AsyncIterator[tuple[Fanout, SweptStore]]:
    store = SweptStore(stored=8)
    hub = Fanout(broker, store, remember=5, gap_retry=0.01)
    await hub.start()
    try:
        yield hub, store
    finally:
        await hub.stop()


def seqs_of(wires: list[str]) -> list[int]:
    return [json.loads(wire)["seq"] for wire in wires]


async def test_a_feed_remembers_what_its_first_joiner_read_and_what_it_delivers_after(
    remembering: tuple[Fanout, SweptStore], broker: CountingBroker
) -> None:
    fanout, store = remembering
    listener = RecordingListener()
    await asyncio.gather(*(fanout.join(ROOM, listener) for _ in range(10)))
    assert store.counter_calls == [[ROOM]]  # one read starts the feed, whoever joins

    recent = fanout.recent(ROOM)
    assert recent is not None and recent.last_seq == 8 and recent.latest(5) is None  # nothing known yet
    assert recent.after(8) == [] and recent.after(12) == []

    fanout.remember_read(ROOM, store.messages[-6:])  # the first joiner's page, read from storage
    recent = fanout.recent(ROOM)
    assert recent is not None
    assert recent.latest(5) == ([message_wire(msg(seq)) for seq in range(4, 9)], True)
    assert recent.latest(6) is None  # older than what is remembered: storage answers
    assert recent.after(5) == [message_wire(msg(seq)) for seq in (6, 7, 8)]
    assert recent.after(2) is None

    await publish(broker, 10, 9, 11)
    await eventually(lambda: listener.seqs == [9, 10, 11])
    recent = fanout.recent(ROOM)
    assert recent is not None and recent.last_seq == 11
    assert [seq for seq, _ in recent.frames] == [7, 8, 9, 10, 11]
    assert seqs_of(recent.after(6) or []) == [7, 8, 9, 10, 11]


async def test_a_young_room_is_known_whole_and_an_empty_one_has_no_history(broker: CountingBroker) -> None:
    store = SweptStore(stored=3)
    fanout = Fanout(broker, store, remember=50)
    await fanout.join(ROOM, RecordingListener())
    fanout.remember_read(ROOM, store.messages)
    store.seq = 0
    await fanout.join("empty", RecordingListener())

    young, empty = fanout.recent(ROOM), fanout.recent("empty")
    assert young is not None and young.latest(50) == ([message_wire(msg(seq)) for seq in (1, 2, 3)], False)
    assert empty is not None and empty.latest(50) == ([], False)
    assert fanout.recent("never-joined") is None
    await fanout.stop()


async def test_messages_read_from_storage_are_remembered_only_where_they_join_up(
    broker: CountingBroker,
) -> None:
    store = SweptStore(stored=20)
    fanout = Fanout(broker, store, remember=10)
    await fanout.join(ROOM, RecordingListener())
    fanout.remember_read(ROOM, [msg(19), msg(20)])

    fanout.remember_read(ROOM, [msg(seq) for seq in range(5, 12)])  # does not reach seq 19
    recent = fanout.recent(ROOM)
    assert recent is not None and [seq for seq, _ in recent.frames] == [19, 20]

    fanout.remember_read(ROOM, [msg(seq) for seq in range(5, 20)])  # joins up; only 10 kept
    recent = fanout.recent(ROOM)
    assert recent is not None and [seq for seq, _ in recent.frames] == list(range(11, 21))

    fanout.remember_read(ROOM, [msg(seq) for seq in range(15, 25)])  # past what was delivered: ignored
    recent = fanout.recent(ROOM)
    assert recent is not None and recent.last_seq == 20 and [seq for seq, _ in recent.frames] == list(range(11, 21))
    await fanout.stop()


async def test_a_feed_waiting_for_a_missing_seq_or_a_broker_that_is_down_is_not_trusted_for_history(
    remembering: tuple[Fanout, SweptStore], broker: CountingBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    fanout, _ = remembering
    await fanout.join(ROOM, RecordingListener())
    assert fanout.recent(ROOM) is not None

    await publish(broker, 10)  # 9 is missing (storage has only 1-8): the feed holds 10 back
    await eventually(lambda: fanout.recent(ROOM) is None, what="a gap makes storage answer")

    monkeypatch.setattr(CountingBroker, "receiving", property(lambda self: False))
    await fanout.join("other", RecordingListener())
    assert fanout.recent("other") is None


async def test_the_sweep_asks_for_every_room_in_one_read_and_catches_up_a_room_behind(broker: CountingBroker) -> None:
    store = SweptStore(stored=2)
    fanout = Fanout(broker, store, sweep_interval=0.02)
    await fanout.start()
    listener = RecordingListener()
    for room in ("a", "b", ROOM):
        await fanout.join(room, listener)
    # Stored and acked, but its publish died with its process.
    store.messages.append(msg(3))
    store.seq = 3

    await eventually(lambda: 3 in listener.seqs, what="the sweep's catch-up")
    assert ["a", "b", ROOM] in store.counter_calls  # after one read per room as it was joined
    await fanout.stop()


async def test_the_sweep_reads_only_rooms_quiet_since_the_last_one_and_every_room_now_and_then(
    broker: CountingBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room still talking shows a lost message as a gap at its next one; its
    # counter is mostly ahead of publishes on their way, which are no loss.
    monkeypatch.setattr(fanout_module, "FULL_SWEEP_EVERY", 1000)
    store = SweptStore(stored=0)
    fanout = Fanout(broker, store, sweep_interval=0.02)
    await fanout.start()
    for room in ("quiet", ROOM):
        await fanout.join(room, RecordingListener())
    store.counter_calls.clear()

    for seq in range(1, 16):  # ROOM talks through several sweeps
        store.messages.append(msg(seq))
        store.seq = seq
        await publish(broker, seq)
        await asyncio.sleep(0.01)

    assert store.counter_calls and all(calls == ["quiet"] for calls in store.counter_calls)
    await eventually(lambda: [ROOM] in store.counter_calls or ["quiet", ROOM] in store.counter_calls, what="quiet now")
    await fanout.stop()

    monkeypatch.setattr(fanout_module, "FULL_SWEEP_EVERY", 1)
    fanout = Fanout(broker, store, sweep_interval=0.02)
    await fanout.start()
    await fanout.join(ROOM, RecordingListener())
    store.counter_calls.clear()
    await eventually(lambda: [ROOM] in store.counter_calls, what="a full sweep reads a room at its first sweep")
    await fanout.stop()


# -- revisions (edits and deletions) -------------------------------------------------


def updates_received(listener: RecordingListener) -> list[tuple[int, str]]:
    frames = [json.loads(text) for seq, text in listener.received if seq is None]
    return [(f["message"]["rev"], f["message"]["body"]) for f in frames if f["type"] == "message_updated"]


async def revised_fanout(broker: CountingBroker, store: SweptStore) -> Fanout:
    fanout = Fanout(
        broker,
        store,
        remember=5,
        sweep_interval=0.02,
    )
    await fanout.start()
    return fanout


async def test_revisions_are_delivered_live_and_change_what_the_feed_remembers(broker: CountingBroker) -> None:
    store = SweptStore(stored=3)
    fanout = await revised_fanout(broker, store)
    listener = RecordingListener()
    await fanout.join(ROOM, listener)
    await fanout.join(ROOM, RecordingListener())
    fanout.remember_read(ROOM, store.messages)

    await fanout.publish_revision(store.revise(2, "fixed"))
    await fanout.publish_revision(store.revise(2, "fixed again"))

    await eventually(lambda: len(updates_received(listener)) == 2, what="both revisions delivered")
    assert updates_received(listener) == [(1, "fixed"), (2, "fixed again")]
    recent = fanout.recent(ROOM)
    assert recent is not None
    latest = recent.latest(3)
    assert latest is not None
    assert [json.loads(wire)["body"] for wire in latest[0]] == ["message 1", "fixed again", "message 3"]
    assert fanout.rev_known(ROOM) == 2
    await asyncio.sleep(0.1)  # sweeps: nothing was missed, so storage is not asked
    assert store.revised_calls == []
    await fanout.stop()


async def test_the_sweep_reads_a_revision_whose_publish_was_lost(broker: CountingBroker) -> None:
    store = SweptStore(stored=3)
    fanout = await revised_fanout(broker, store)
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    store.revise(1, "edited where the publish died")  # rev 1: stored, never published
    await fanout.publish_revision(store.revise(3, "edited and published"))  # rev 2

    await eventually(lambda: len(updates_received(listener)) == 2, what="the lost revision caught up")
    assert sorted(updates_received(listener)) == [(1, "edited where the publish died"), (2, "edited and published")]
    await asyncio.sleep(0.1)
    assert len(updates_received(listener)) == 2  # each delivered once
    assert store.revised_calls == [0]
    await fanout.stop()


async def test_a_revision_counted_before_its_publish_arrived_is_still_delivered(broker: CountingBroker) -> None:
    # MongoDB moves the room's rev counter before the message: a feed that
    # starts (or sweeps) in between has counted a revision not yet published.
    store = SweptStore(stored=2)
    revision = store.revise(1, "counted first, published after")
    fanout = await revised_fanout(broker, store)
    listener = RecordingListener()
    await fanout.join(ROOM, listener)

    await fanout.publish_revision(revision)

    await eventually(lambda: updates_received(listener) == [(1, "counted first, published after")])
    await fanout.stop()
