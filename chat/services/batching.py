"""Work that arrives while the last batch is under way goes together in the next one.

The one queueing primitive of the services: group commit for writes (a busy
room's messages stored in one write, chat.services.conversation.messages) and
the same idea for reads (session look-ups after a restart, thousands of
sockets reconnecting at once, chat.services.identity.accounts). When it is
quiet each item runs at once, alone; under load a lane makes a few calls of
many items instead of many calls of one, and nobody waits longer than the
batch ahead of theirs.

Items are queued per lane (one writer per lane at a time) and known by a key:
an item whose key is already queued shares that item's outcome instead of
queueing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..errors import Unavailable

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")


def _retrieve(future: asyncio.Future[Any]) -> None:
    # An asker that gave up never reads the outcome; nor must asyncio complain about it.
    if not future.cancelled():
        future.exception()


class Batches(Generic[K, T, R]):
    """Lanes of queued items, each drained by one task in batches of up to ``max_batch``, in order.

    ``run`` takes a batch and returns one outcome per item. If it raises, every
    item of the batch gets that error; if the error is one of
    ``fail_queued_on``, so does everything queued behind it in that lane (a
    sender's later message must not be stored before the one that failed).

    ``join_in_flight``: an item whose key is in the batch now running shares
    its outcome (a resend of a message being written). Without it the item
    goes in the next batch: a look-up asked after a change must not get an
    answer read before it.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int,
        lane_of: Callable[[T], str] = lambda _: "",
        join_in_flight: bool = False,
        fail_queued_on: tuple[type[Exception], ...] = (),
        name: str = "batch",
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self._lane_of = lane_of
        self._join_in_flight = join_in_flight
        self._fail_queued_on = fail_queued_on
        self._name = name
        self._queues: dict[str, dict[K, tuple[T, asyncio.Future[R]]]] = {}
        self._running: dict[str, dict[K, asyncio.Future[R]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: K, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now (its place in its lane's order is taken now); the future holds its outcome.

        The future is shared with every other asker of ``key``: await it
        through ``asyncio.shield`` (see :meth:`outcome`), so that one asker
        giving up leaves it to the others.
        """
        lane = self._lane_of(item)
        queue = self._queues.setdefault(lane, {})
        if key in queue:
            return queue[key][1]
        if self._join_in_flight and key in self._running.get(lane, {}):
            return self._running[lane][key]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        queue[key] = (item, future)
        if lane not in self._workers:
            self._workers[lane] = asyncio.create_task(self._drain(lane), name=f"{self._name}-{lane}")
        return future

    async def outcome(self, key: K, item: T, timeout: float | None = None) -> R:
        """Submit ``item`` and wait for its outcome; after ``timeout`` seconds, Unavailable (it may still run)."""
        future = self.submit(key, item)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Unavailable(f"{self._name}: too busy to answer in time; retry shortly") from None

    async def _drain(self, lane: str) -> None:
        running: dict[K, asyncio.Future[R]] = {}
        try:
            while queue := self._queues.get(lane):
                keys = list(queue)[: self.max_batch]
                running = self._running[lane] = {}
                items = []
                for key in keys:
                    item, running[key] = queue.pop(key)
                    items.append(item)
                try:
                    outcomes = await self._run(items)
                except Exception as exc:
                    failed = list(running.values())
                    if isinstance(exc, self._fail_queued_on):
                        failed += [future for _, future in self._queues.pop(lane, {}).values()]
                    for future in failed:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self._running.pop(lane, None)
                for future, result in zip(running.values(), outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            del self._workers[lane]
            # Only if the worker was cancelled (shutdown): nobody may hang,
            # neither the batch it was running nor what queued behind it.
            stranded = list(running.values()) + [future for _, future in self._queues.pop(lane, {}).values()]
            for future in stranded:
                if not future.done():
                    future.set_exception(Unavailable("shutting down; retry shortly"))


def batched_reads(
    fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], *, max_batch: int = 500, name: str = "look-ups"
) -> Batches[K, K, V | None]:
    """Reads by key that arrive together go to storage together: ``await reads.outcome(key, key)``.

    Under a storm (thousands of sockets reconnecting after a restart) a
    process makes a few reads of hundreds of keys instead of thousands of
    reads of one. A key asked for while a read of it is under way waits for
    the next read: its asker may have just changed what is stored.
    """

    async def read(keys: list[K]) -> list[V | None]:
        found = await fetch(keys)
        return [found.get(key) for key in keys]

    return Batches(read, max_batch=max_batch, name=name)
