"""One writer per room per process (the MongoDB backend's queue for seqs)."""

from __future__ import annotations

import asyncio

import pytest

from chat.errors import Unavailable
from chat.storage.mongo.writers import RoomWriters


async def test_writers_in_one_room_take_turns_and_other_rooms_do_not_wait() -> None:
    writers = RoomWriters()
    order: list[str] = []

    async def write(room: str, name: str, hold: float) -> None:
        async with writers.turn(room):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    await asyncio.gather(write("r1", "a", 0.05), write("r1", "b", 0), write("r2", "c", 0))

    assert order.index("a out") < order.index("b in")  # one at a time in r1
    assert order.index("c in") < order.index("a out")  # r2 did not wait for r1
    assert writers._locks == {}  # nothing left behind


async def test_a_writer_that_waits_too_long_gets_unavailable_instead_of_queueing_on() -> None:
    writers = RoomWriters(max_wait=0.05)
    release = asyncio.Event()

    async def slow() -> None:
        async with writers.turn("r1"):
            await release.wait()

    holder = asyncio.create_task(slow())
    await asyncio.sleep(0)

    with pytest.raises(Unavailable):
        async with writers.turn("r1"):
            pass
    release.set()
    await holder
    async with writers.turn("r1"):  # free again
        pass
