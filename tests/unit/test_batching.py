"""The queueing primitive as reads use it: look-ups that arrive together are read together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from chat.errors import Unavailable
from chat.services.batching import batched_reads


class Store:
    def __init__(self) -> None:
        self.values = {f"k{i}": i for i in range(100)}
        self.reads: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def fetch(self, keys: list[str]) -> Mapping[str, int]:
        self.reads.append(keys)
        await self.gate.wait()
        if self.fail:
            raise Unavailable("database down")
        return {key: self.values[key] for key in keys if key in self.values}


async def test_keys_asked_for_while_a_read_is_in_flight_go_together_in_the_next() -> None:
    store = Store()
    lookup = batched_reads(store.fetch, max_batch=3)
    store.gate.clear()
    first = asyncio.ensure_future(lookup.outcome("k1", "k1"))
    await asyncio.sleep(0)  # the first read starts, alone
    later = [asyncio.ensure_future(lookup.outcome(key, key)) for key in ("k2", "k3", "k2", "nope", "k5")]
    await asyncio.sleep(0)
    store.gate.set()

    assert await first == 1
    assert await asyncio.gather(*later) == [2, 3, 2, None, 5]
    # One key once per read however many asked; at most max_batch keys a read.
    assert store.reads == [["k1"], ["k2", "k3", "nope"], ["k5"]]


async def test_a_failed_read_raises_for_everyone_who_waited_for_it_and_the_next_read_is_fresh() -> None:
    store = Store()
    lookup = batched_reads(store.fetch)
    store.fail = True
    results = await asyncio.gather(lookup.outcome("k1", "k1"), lookup.outcome("k2", "k2"), return_exceptions=True)
    assert all(isinstance(result, Unavailable) for result in results)

    store.fail = False
    assert await lookup.outcome("k1", "k1") == 1


async def test_an_asker_that_gives_up_does_not_disturb_the_others() -> None:
    store = Store()
    lookup = batched_reads(store.fetch)
    store.gate.clear()
    impatient = asyncio.ensure_future(lookup.outcome("k1", "k1"))
    patient = asyncio.ensure_future(lookup.outcome("k1", "k1"))
    await asyncio.sleep(0)
    impatient.cancel()
    store.gate.set()

    assert await patient == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_a_worker_stopped_at_shutdown_leaves_nobody_waiting_neither_its_batch_nor_the_queue() -> None:
    store = Store()
    lookup = batched_reads(store.fetch)
    store.gate.clear()
    in_flight = asyncio.ensure_future(lookup.outcome("k1", "k1"))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(lookup.outcome("k2", "k2"))
    await asyncio.sleep(0)
    for task in asyncio.all_tasks():
        if task.get_name().startswith("look-ups"):
            task.cancel()

    for waiter in (in_flight, queued):
        with pytest.raises(Unavailable, match="shutting down"):
            await waiter
