"""One contract suite for :class:`chat.broker.PresenceStore`, run against every backend.

Each test gets the store that goes with a fresh, connected broker: the
in-process :class:`~chat.broker.MemoryPresence`, or a
:class:`~chat.broker.redis.RedisPresence` on the session's redis-server or on
its 3-master Redis Cluster. Redis keys are server-wide (cluster-wide), so every
test uses fresh room ids.

Both stores read expiry times from a :class:`FakeClock` the tests move by
hand. Redis also gives each key a real ``EXPIRE`` of ``int(ttl) + 1`` seconds,
longer than any of these tests runs, so only the fake clock decides.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from chat.broker import PresenceStore, open_backplane
from chat.models import OnlineUser
from tests.support.clock import FakeClock

BACKENDS = ["memory", "redis", "redis+cluster"]
URL_FIXTURES = {"redis": "redis_url", "redis+cluster": "redis_cluster_url"}
TTL = 30.0

ALICE = OnlineUser(username="alice", id="u-alice")
BOB = OnlineUser(username="bob", id="u-bob")
CAROL = OnlineUser(username="carol", id="u-carol")


@pytest.fixture(params=BACKENDS)
def broker_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else request.getfixturevalue(URL_FIXTURES[request.param])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def presence(broker_url: str, clock: FakeClock) -> AsyncIterator[PresenceStore]:
    backplane = open_backplane(broker_url, clock=clock)
    await backplane.broker.connect()
    try:
        yield backplane.presence
    finally:
        await backplane.broker.disconnect()


def room_id() -> str:
    return f"room-{uuid.uuid4().hex}"


async def test_added_users_are_online_sorted_by_username(presence: PresenceStore) -> None:
    room = room_id()

    for user in (CAROL, ALICE, BOB):
        await presence.add(room, "a:1", user, TTL)

    online = await presence.online(room)
    assert online == [ALICE, BOB, CAROL]
    assert all(isinstance(user, OnlineUser) for user in online)


async def test_a_room_nobody_joined_is_empty(presence: PresenceStore) -> None:
    assert await presence.online(room_id()) == []


async def test_a_user_online_through_two_instances_is_listed_once(presence: PresenceStore) -> None:
    room = room_id()

    await presence.add(room, "a:1", ALICE, TTL)
    await presence.add(room, "b:2", ALICE, TTL)

    assert await presence.online(room) == [ALICE]


async def test_a_user_stays_online_while_another_instance_still_has_them(presence: PresenceStore) -> None:
    room = room_id()
    await presence.add(room, "a:1", ALICE, TTL)
    await presence.add(room, "b:2", ALICE, TTL)

    await presence.remove(room, "a:1", ALICE)

    assert await presence.online(room) == [ALICE]


async def test_removing_the_last_entry_of_a_user_takes_them_offline(presence: PresenceStore) -> None:
    room = room_id()
    await presence.add(room, "a:1", ALICE, TTL)
    await presence.add(room, "a:1", BOB, TTL)

    await presence.remove(room, "a:1", ALICE)

    assert await presence.online(room) == [BOB]


async def test_removing_someone_who_is_not_there_is_harmless(presence: PresenceStore) -> None:
    room = room_id()
    await presence.add(room, "a:1", BOB, TTL)

    await presence.remove(room, "a:1", ALICE)
    await presence.remove(room, "b:2", BOB)
    await presence.remove(room_id(), "a:1", ALICE)

    assert await presence.online(room) == [BOB]


async def test_entries_expire_after_their_ttl(presence: PresenceStore, clock: FakeClock) -> None:
    room = room_id()
    await presence.add(room, "a:1", ALICE, 0.5)
    await presence.add(room, "a:1", BOB, TTL)
    assert await presence.online(room) == [ALICE, BOB]

    clock.advance(0.8)

    assert await presence.online(room) == [BOB]


async def test_refresh_pushes_the_expiry_forward(presence: PresenceStore, clock: FakeClock) -> None:
    room, other = room_id(), room_id()
    await presence.add(room, "a:1", ALICE, 0.6)
    await presence.add(other, "a:1", BOB, 0.6)
    await presence.add(room, "b:2", CAROL, 0.6)  # another instance: not refreshed by a:1

    clock.advance(0.3)
    await presence.refresh("a:1", [(room, ALICE), (other, BOB)], 0.6)
    clock.advance(0.4)  # 0.7s after add: past the first expiry, before the refreshed one

    assert await presence.online(room) == [ALICE]
    assert await presence.online(other) == [BOB]


async def test_refresh_of_an_instance_with_no_entries_changes_nothing(presence: PresenceStore) -> None:
    room = room_id()
    await presence.add(room, "a:1", ALICE, TTL)

    await presence.refresh("a:1", [], TTL)

    assert await presence.online(room) == [ALICE]


async def test_rooms_are_independent(presence: PresenceStore) -> None:
    lobby, kitchen = room_id(), room_id()

    await presence.add(lobby, "a:1", ALICE, TTL)
    await presence.add(kitchen, "a:1", BOB, TTL)
    await presence.remove(kitchen, "a:1", BOB)

    assert await presence.online(lobby) == [ALICE]
    assert await presence.online(kitchen) == []


async def test_a_heartbeat_of_hundreds_of_rooms_keeps_every_entry_alive(
    presence: PresenceStore, clock: FakeClock
) -> None:
    # Renewed in slices of a pipeline each (Redis), one ZADD per room for all its members.
    rooms = [room_id() for _ in range(300)]
    entries = [(room, user) for room in rooms for user in (ALICE, BOB)]
    await presence.refresh("i1", entries, TTL)
    clock.advance(TTL - 1)
    await presence.refresh("i1", entries, TTL)
    clock.advance(TTL - 1)

    for room in (rooms[0], rooms[150], rooms[-1]):
        assert await presence.online(room) == [ALICE, BOB]


async def test_an_instance_going_away_is_taken_off_every_room_at_once(presence: PresenceStore) -> None:
    rooms = [room_id() for _ in range(3)]
    for room in rooms:
        await presence.add(room, "a:1", ALICE, TTL)
        await presence.add(room, "b:2", BOB, TTL)

    await presence.remove_many("a:1", [(room, ALICE) for room in rooms])

    assert await presence.online_in_each(rooms) == {room: [BOB] for room in rooms}


async def test_many_rooms_are_read_at_once(presence: PresenceStore) -> None:
    rooms = [room_id() for _ in range(300)]  # more than one pipeline's worth
    for room in rooms[::2]:
        await presence.add(room, "a:1", CAROL, TTL)

    found = await presence.online_in_each(rooms)

    assert found == {room: [CAROL] if n % 2 == 0 else [] for n, room in enumerate(rooms)}
