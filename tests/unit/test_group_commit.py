"""A busy room's messages are stored together: one write per batch, in the order sent."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence

import pytest

from chat.errors import Unavailable
from chat.models import Message, NewMessage
from chat.services.conversation.messages import GroupCommit

MOMENT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def new(client_id: str, room: str = "r1") -> NewMessage:
    return NewMessage(room_id=room, user_id="u1", username="alice", body=client_id, client_id=client_id)


class SlowStore:
    """Records each write; each waits for the test to let it finish."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next: Exception | None = None
        self.seq = 0

    async def __call__(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        self.writes.append([n.client_id for n in news])
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        results = []
        for n in news:
            self.seq += 1
            results.append(
                (Message("id", n.room_id, self.seq, n.user_id, n.username, n.body, MOMENT, n.client_id), True)
            )
        return results


async def test_a_lone_message_is_written_at_once_on_its_own() -> None:
    store = SlowStore()
    message, created = await GroupCommit(store).submit(new("a"))
    assert (message.seq, created) == (1, True)
    assert store.writes == [["a"]]


async def test_messages_sent_during_a_write_go_together_in_the_next_one_in_order() -> None:
    store = SlowStore()
    commits = GroupCommit(store)
    store.gate.clear()
    first = asyncio.create_task(commits.submit(new("a")))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(commits.submit(new(c))) for c in "bcde"]
    await asyncio.sleep(0)
    store.gate.set()

    results = await asyncio.gather(first, *rest)

    assert store.writes == [["a"], ["b", "c", "d", "e"]]
    assert [m.seq for m, _ in results] == [1, 2, 3, 4, 5]


async def test_a_batch_is_at_most_max_batch() -> None:
    store = SlowStore()
    commits = GroupCommit(store, max_batch=2)
    store.gate.clear()
    tasks = [asyncio.create_task(commits.submit(new(c))) for c in "abcde"]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*tasks)

    assert store.writes == [["a", "b"], ["c", "d"], ["e"]]


async def two_sends_whose_first_write_fails(
    store: SlowStore, error: Exception
) -> tuple[GroupCommit, asyncio.Task[tuple[Message, bool]], asyncio.Task[tuple[Message, bool]]]:
    """Send "a", then "b" while "a" is being written; the write of "a" raises ``error``."""
    commits = GroupCommit(store)
    store.gate.clear()
    store.fail_next = error
    first = asyncio.create_task(commits.submit(new("a")))
    await asyncio.sleep(0)
    second = asyncio.create_task(commits.submit(new("b")))
    await asyncio.sleep(0)
    store.gate.set()
    return commits, first, second


async def test_an_unreachable_database_fails_the_queue_behind_the_write_too() -> None:
    # A sender's later message must not be stored before its resend of an
    # earlier one that failed: what queued behind the write fails with it.
    store = SlowStore()
    commits, first, second = await two_sends_whose_first_write_fails(store, Unavailable("database down"))

    for task in (first, second):
        with pytest.raises(Unavailable):
            await task
    assert store.writes == [["a"]]

    message, _ = await commits.submit(new("a"))  # the resends, in order
    assert (message.client_id, message.seq) == ("a", 1)


async def test_any_other_failed_write_fails_its_own_batch_only() -> None:
    store = SlowStore()
    _, first, second = await two_sends_whose_first_write_fails(store, RuntimeError("a bug in one batch"))

    with pytest.raises(RuntimeError):
        await first
    message, _ = await second
    assert message.client_id == "b"


async def test_a_sender_waits_at_most_max_wait_and_the_write_goes_on_for_the_rest() -> None:
    store = SlowStore()
    commits = GroupCommit(store, max_wait=0.05)
    store.gate.clear()
    waiting = asyncio.create_task(commits.submit(new("a")))

    with pytest.raises(Unavailable, match="retry shortly"):
        await waiting
    store.gate.set()
    await asyncio.sleep(0.01)
    assert store.writes == [["a"]]  # stored after all: a resend with its client_id finds it


async def test_one_writer_serves_every_room_one_write_for_all_that_queued() -> None:
    store = SlowStore()
    commits = GroupCommit(store)
    store.gate.clear()
    first = asyncio.create_task(commits.submit(new("a", room="r1")))
    await asyncio.sleep(0)
    rest = [
        asyncio.create_task(commits.submit(new(c, room=room))) for c, room in (("b", "r2"), ("c", "r1"), ("d", "r3"))
    ]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(first, *rest)

    assert store.writes == [["a"], ["b", "c", "d"]]


async def test_a_resend_of_a_message_still_queued_or_being_written_waits_for_that_write() -> None:
    # While storage is slow, clients resend what was not acked; queueing each
    # resend again would give storage more to do the slower it is.
    store = SlowStore()
    commits = GroupCommit(store, max_wait=0.05)
    store.gate.clear()
    first = asyncio.ensure_future(commits.submit(new("a")))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):  # the senders give up waiting ...
        await commits.submit(new("a"))
    with pytest.raises(Unavailable):
        await first
    resends = [asyncio.ensure_future(commits.submit(new(c))) for c in "aabab"]
    await asyncio.sleep(0)
    store.gate.set()

    results = [message for message, _ in await asyncio.gather(*resends)]
    assert [m.client_id for m in results] == list("aabab")
    assert {m.seq for m in results if m.client_id == "a"} == {1}
    # ... and each message was written once: "a" alone, then "b".
    assert store.writes == [["a"], ["b"]]
    # Finished: a later resend is a new write (storage finds the original).
    await commits.submit(new("a"))
    assert store.writes[-1] == ["a"]
