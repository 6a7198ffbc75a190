"""Finding rooms: each read once per storm of handshakes, never a miss remembered."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from chat.errors import NotFound
from chat.models import Room
from chat.services.rooms.catalog import ROOM_CACHE_SECONDS, Rooms
from chat.storage import Storage
from tests.support.clock import FakeClock


@pytest.fixture
def reads(memory_storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The room ids storage is asked for, in order."""
    asked: list[str] = []
    read = memory_storage.rooms.get_many

    async def counting(room_ids: Collection[str]) -> dict[str, Room]:
        asked.extend(room_ids)
        return await read(room_ids)

    monkeypatch.setattr(memory_storage.rooms, "get_many", counting)
    return asked


async def test_a_room_is_read_once_for_many_look_ups_and_again_after_a_while(
    memory_storage: Storage, reads: list[str]
) -> None:
    clock = FakeClock(1000.0)
    rooms = Rooms(memory_storage, clock=clock)
    creator = await memory_storage.users.add("alice", b"hash")
    lobby = await rooms.create("lobby", creator)

    for _ in range(50):
        assert await rooms.get(lobby.id) == lobby
    assert reads == [lobby.id]

    clock.advance(ROOM_CACHE_SECONDS + 1)
    await rooms.get(lobby.id)
    assert reads == [lobby.id, lobby.id]


async def test_a_room_not_found_is_asked_for_again_each_time(memory_storage: Storage, reads: list[str]) -> None:
    # It may be created a moment later, by any process.
    rooms = Rooms(memory_storage)
    for _ in range(2):
        with pytest.raises(NotFound):
            await rooms.get("not-yet")
    assert reads == ["not-yet", "not-yet"]


async def test_a_room_asked_for_by_many_at_once_is_read_once_or_twice(
    memory_storage: Storage, reads: list[str]
) -> None:
    # A storm of sockets coming back after a restart: the first asker reads
    # it, everyone asking meanwhile shares the next read, then it is known.
    rooms = Rooms(memory_storage)
    creator = await memory_storage.users.add("alice", b"hash")
    lobby = await memory_storage.rooms.add("lobby", creator)
    other = await memory_storage.rooms.add("other", creator)

    found = await asyncio.gather(*(rooms.get(room.id) for room in [lobby, other] * 20))

    assert found == [lobby, other] * 20
    assert 1 <= reads.count(lobby.id) <= 2 and 1 <= reads.count(other.id) <= 2
