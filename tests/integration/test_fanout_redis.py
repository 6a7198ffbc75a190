"""Two chat processes, one Redis: ordered, complete, duplicate-free delivery and shared presence.

Each "process" is simulated in this one test process as an independent stack:
its own :class:`~chat.broker.redis.RedisBroker` (own connections to the
session's redis-server) and its own :class:`~chat.services.realtime.fanout.Fanout`.
Both stacks share one SQLite storage, as processes of a cluster share one
database. Listeners stand in for sockets and just record what they get.

Tests that restart redis-server do it with ``outage()``, which starts it again even if they fail.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chat.broker import open_backplane
from chat.broker.redis import RedisBroker
from chat.models import Message, Room, User
from chat.services.conversation.messages import Messages
from chat.services.realtime.fanout import Fanout
from chat.services.realtime.presence import Presence
from chat.storage import Storage
from chat.wire.events import PRESENCE_CHANGED
from chat.wire.server import message_frame
from tests.support import handling
from tests.support.fakes import RecordingListener
from tests.support.services import RedisServer
from tests.support.storage import connected_storage
from tests.support.waiting import eventually

# Bounds on waits: delivery normally takes milliseconds, recovery from a Redis
# restart a second or two (reconnect backoff), expiry of presence about the ttl.
DELIVERY_TIMEOUT = 10.0
RECOVERY_TIMEOUT = 20.0
# After the expected frames arrived, how long to keep watching for duplicates.
QUIET_PERIOD = 0.5
PRESENCE_TTL = 1.0
HEARTBEAT = 0.2


class Stack:
    """One chat process's view of the cluster: its own broker and fan-out."""

    def __init__(self, name: str, redis_url: str, messages: Messages) -> None:
        self.name = name
        self.backplane = open_backplane(redis_url)
        broker = self.backplane.broker
        assert isinstance(broker, RedisBroker)
        self.broker = broker
        self.fanout = Fanout(broker, messages, gap_retry=0.05)

    async def start(self) -> Stack:
        await self.broker.connect()
        await self.fanout.start()
        return self

    async def stop(self) -> None:
        await self.fanout.stop()
        await self.broker.disconnect()


@pytest.fixture
async def storage(sqlite_url: str) -> AsyncIterator[Storage]:
    async with connected_storage(sqlite_url) as store:
        yield store


@pytest.fixture
def messages(storage: Storage) -> Messages:
    return Messages(storage)


@pytest.fixture
async def alice(storage: Storage) -> User:
    return await storage.users.add("alice", b"$2b$04$fakehash")


@pytest.fixture
async def bob(storage: Storage) -> User:
    return await storage.users.add("bob", b"$2b$04$fakehash")


@pytest.fixture
async def room(storage: Storage, alice: User) -> Room:
    # Room ids are fresh per database, but Redis is shared: make names unique anyway.
    return await storage.rooms.add(f"lobby-{uuid.uuid4().hex[:8]}", alice)


@pytest.fixture
async def stacks(redis_url: str, messages: Messages) -> AsyncIterator[tuple[Stack, Stack]]:
    a, b = Stack("a", redis_url, messages), Stack("b", redis_url, messages)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def post(messages: Messages, user: User, room: Room, text: str) -> Message:
    message, created = await handling.post(messages, user, room, f"client-{uuid.uuid4().hex}", text)
    assert created
    return message


async def quietly_settled() -> None:
    """Give late duplicates a chance to show up before asserting there are none."""
    await asyncio.sleep(QUIET_PERIOD)


async def stored_frames(messages: Messages, room: Room) -> list[str]:
    return [message_frame(message) for message in await messages.backfill(room.id, 0)]


# -- messages ----------------------------------------------------------------------


async def test_a_message_published_through_one_process_reaches_listeners_on_both_exactly_once(
    stacks: tuple[Stack, Stack], messages: Messages, alice: User, room: Room
) -> None:
    a, b = stacks
    on_a, on_b = RecordingListener(), RecordingListener()
    await a.fanout.join(room.id, on_a)
    await b.fanout.join(room.id, on_b)

    message = await post(messages, alice, room, "hello, cluster")
    await a.fanout.publish_message(message)

    await eventually(lambda: on_a.message_seqs == [1] and on_b.message_seqs == [1], DELIVERY_TIMEOUT)
    await quietly_settled()
    assert on_a.received == on_b.received == [(1, message_frame(message))]


async def test_a_concurrent_burst_from_both_processes_arrives_everywhere_in_seq_order_once(
    stacks: tuple[Stack, Stack], messages: Messages, alice: User, bob: User, room: Room
) -> None:
    a, b = stacks
    listeners = {"a": [RecordingListener(), RecordingListener()], "b": [RecordingListener()]}
    for listener in listeners["a"]:
        await a.fanout.join(room.id, listener)
    for listener in listeners["b"]:
        await b.fanout.join(room.id, listener)
    everyone = [*listeners["a"], *listeners["b"]]

    async def send(i: int) -> None:
        stack, sender = (a, alice) if i % 2 else (b, bob)
        await stack.fanout.publish_message(await post(messages, sender, room, f"burst {i}"))

    await asyncio.gather(*(send(i) for i in range(50)))

    await eventually(lambda: all(len(listener.message_seqs) >= 50 for listener in everyone), DELIVERY_TIMEOUT)
    await quietly_settled()
    expected = await stored_frames(messages, room)
    assert len(expected) == 50
    for listener in everyone:
        assert listener.message_seqs == list(range(1, 51))
        assert listener.message_frames == expected


@pytest.mark.slow
async def test_messages_stored_while_a_subscription_was_down_are_delivered_after_the_reconnect(
    stacks: tuple[Stack, Stack], messages: Messages, alice: User, room: Room, redis_server: RedisServer
) -> None:
    a, b = stacks
    on_a, on_b = RecordingListener(), RecordingListener()
    await a.fanout.join(room.id, on_a)
    await b.fanout.join(room.id, on_b)
    for i in range(1, 4):
        await a.fanout.publish_message(await post(messages, alice, room, f"before {i}"))
    await eventually(lambda: on_a.message_seqs == on_b.message_seqs == [1, 2, 3], DELIVERY_TIMEOUT)

    with redis_server.outage():
        for i in range(4, 9):
            # Storing succeeds with Redis down; the publish fails, which
            # publish_message absorbs: it delivers to its own process at once
            # and retries the publish in the background.
            await a.fanout.publish_message(await post(messages, alice, room, f"during outage {i}"))
        assert on_a.message_seqs == list(range(1, 9))

    # B catches up, through its resync from storage or the retried publishes.
    await eventually(lambda: on_b.message_seqs == list(range(1, 9)), RECOVERY_TIMEOUT)

    # And live delivery carries on from where the resync left off.
    for i in range(9, 12):
        await a.fanout.publish_message(await post(messages, alice, room, f"after {i}"))
    await eventually(lambda: on_a.message_seqs == on_b.message_seqs == list(range(1, 12)), RECOVERY_TIMEOUT)
    await quietly_settled()
    expected = await stored_frames(messages, room)
    assert on_a.message_frames == on_b.message_frames == expected


# -- presence ---------------------------------------------------------------------


@pytest.fixture
async def presences(stacks: tuple[Stack, Stack]) -> AsyncIterator[tuple[Presence, Presence]]:
    """A Presence service per process, sharing RedisPresence; only B's heartbeat is started."""
    a, b = stacks
    on_a = Presence(a.backplane.presence, a.fanout, "a:1", ttl=PRESENCE_TTL, heartbeat=HEARTBEAT)
    on_b = Presence(b.backplane.presence, b.fanout, "b:2", ttl=PRESENCE_TTL, heartbeat=HEARTBEAT)
    # As chat.bootstrap wires each process.
    a.fanout.on_control(PRESENCE_CHANGED, on_a.changed)
    b.fanout.on_control(PRESENCE_CHANGED, on_b.changed)
    await on_b.start()
    try:
        yield on_a, on_b
    finally:
        await on_b.stop()
        await on_a.stop()


async def test_a_user_joining_and_leaving_on_one_process_updates_presence_on_the_other(
    stacks: tuple[Stack, Stack], presences: tuple[Presence, Presence], alice: User, bob: User, room: Room
) -> None:
    _, b = stacks
    presence_a, presence_b = presences
    await presence_a.start()  # A is alive and heartbeating throughout
    on_b = RecordingListener()
    await b.fanout.join(room.id, on_b)
    assert [user.username for user in await presence_b.joined(room.id, bob)] == ["bob"]

    await presence_a.joined(room.id, alice)

    await eventually(lambda: on_b.presence_lists[-1:] == [["alice", "bob"]], DELIVERY_TIMEOUT)

    await presence_a.left(room.id, alice)

    await eventually(lambda: on_b.presence_lists[-1:] == [["bob"]], DELIVERY_TIMEOUT)
    # Heartbeats re-read without change: nothing new is sent. A real wait:
    # the heartbeat is a task on its own timer, which takes no clock.
    shown = len(on_b.presence_lists)
    await asyncio.sleep(3 * HEARTBEAT)
    assert len(on_b.presence_lists) == shown


@pytest.mark.slow
async def test_the_users_of_a_process_that_died_without_leaving_drop_out_after_the_ttl(
    stacks: tuple[Stack, Stack], presences: tuple[Presence, Presence], alice: User, bob: User, room: Room
) -> None:
    a, b = stacks
    presence_a, presence_b = presences  # A's heartbeat never runs: it "crashes" after joining
    on_b = RecordingListener()
    await b.fanout.join(room.id, on_b)
    await presence_b.joined(room.id, bob)

    await presence_a.joined(room.id, alice)
    await eventually(lambda: on_b.presence_lists[-1:] == [["alice", "bob"]], DELIVERY_TIMEOUT)
    joined_at = asyncio.get_running_loop().time()

    await a.stop()  # the process dies: no left(), no heartbeat, no goodbye
    # Only the expiry of A's entry can remove alice now.
    await eventually(lambda: on_b.presence_lists[-1:] == [["bob"]], PRESENCE_TTL + 5.0)
    assert asyncio.get_running_loop().time() - joined_at >= PRESENCE_TTL * 0.5
    assert [user.username for user in await presence_b.online(room.id)] == ["bob"]


async def test_a_process_going_away_takes_its_users_off_every_room_at_once(
    stacks: tuple[Stack, Stack],
    presences: tuple[Presence, Presence],
    storage: Storage,
    alice: User,
    bob: User,
    room: Room,
) -> None:
    a, b = stacks
    _, presence_b = presences
    # Entries that outlive the test: only A's goodbye can take alice off.
    presence_a = Presence(a.backplane.presence, a.fanout, "a:1", ttl=60.0, heartbeat=30.0)
    rooms = [room, await storage.rooms.add("other", alice)]
    on_b = {r.id: RecordingListener() for r in rooms}
    for r in rooms:
        await b.fanout.join(r.id, on_b[r.id])
        await presence_b.joined(r.id, bob)
        await presence_a.joined(r.id, alice)
        await eventually(lambda r=r: on_b[r.id].presence_lists[-1:] == [["alice", "bob"]], DELIVERY_TIMEOUT)

    presence_a.going_away = True
    await presence_a.left(room.id, alice)  # a socket closing as its process goes: no round trip of its own
    await presence_a.stop()  # every entry of the process at once, and each room told

    for r in rooms:
        await eventually(lambda r=r: on_b[r.id].presence_lists[-1:] == [["bob"]], DELIVERY_TIMEOUT)
        assert [user.username for user in await presence_b.online(r.id)] == ["bob"]


async def test_a_user_joining_on_the_same_process_is_shown_to_the_sockets_already_there(
    stacks: tuple[Stack, Stack], presences: tuple[Presence, Presence], alice: User, bob: User, room: Room
) -> None:
    _, b = stacks
    _, presence_b = presences
    alices_socket, bobs_socket = RecordingListener(), RecordingListener()
    await b.fanout.join(room.id, alices_socket)
    await presence_b.joined(room.id, alice)
    await b.fanout.join(room.id, bobs_socket)

    assert [user.username for user in await presence_b.joined(room.id, bob)] == ["alice", "bob"]

    await eventually(lambda: alices_socket.presence_lists[-1:] == [["alice", "bob"]], DELIVERY_TIMEOUT)

    await presence_b.left(room.id, bob)

    await eventually(lambda: alices_socket.presence_lists[-1:] == [["alice"]], DELIVERY_TIMEOUT)
