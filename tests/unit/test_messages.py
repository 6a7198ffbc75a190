"""Posting messages and reading history through the Messages service."""

from __future__ import annotations

import asyncio

import pytest

from chat.errors import NotFound, RoomArchived, TooLarge, ValidationError
from chat.models import Message, Room, User, utcnow
from chat.services.conversation.messages import MAX_BODY_LENGTH, Messages, clean_body
from chat.storage import Storage
from tests.support.handling import post

# -- clean_body --------------------------------------------------------------


def test_clean_body_trims_surrounding_whitespace() -> None:
    assert clean_body("  hello there \n\t") == "hello there"


def test_clean_body_keeps_inner_whitespace_and_newlines() -> None:
    assert clean_body("line one\n\n  line two") == "line one\n\n  line two"


@pytest.mark.parametrize("body", ["", " ", "\n\t  \r\n"])
def test_an_empty_body_is_a_validation_error(body: str) -> None:
    with pytest.raises(ValidationError) as caught:
        clean_body(body)

    assert not isinstance(caught.value, TooLarge)
    assert caught.value.field == "body"


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    body = "x" * MAX_BODY_LENGTH

    assert MAX_BODY_LENGTH == 4000
    assert clean_body(body) == body


def test_the_limit_applies_after_trimming() -> None:
    assert clean_body("  " + "x" * MAX_BODY_LENGTH + "  ") == "x" * MAX_BODY_LENGTH


def test_a_body_over_the_limit_is_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        clean_body("x" * (MAX_BODY_LENGTH + 1))

    assert caught.value.field == "body"
    assert "4000" in caught.value.message


def test_the_limit_counts_characters_not_bytes() -> None:
    assert clean_body("é" * MAX_BODY_LENGTH) == "é" * MAX_BODY_LENGTH


# -- Messages ----------------------------------------------------------------


async def test_post_stores_a_cleaned_message(messages: Messages, user: User, room: Room) -> None:
    message, created = await post(messages, user, room, "c1", "  hello  ")

    assert created is True
    assert (message.seq, message.body, message.client_id) == (1, "hello", "c1")
    assert (message.user_id, message.username, message.room_id) == (user.id, user.username, room.id)


async def test_posting_the_same_client_id_again_returns_the_original(
    messages: Messages, user: User, room: Room
) -> None:
    original, _ = await post(messages, user, room, "c1", "first")

    again, created = await post(messages, user, room, "c1", "first")

    assert created is False
    assert again == original
    assert (await messages.recent(room.id)) == ([original], False)


async def test_writing_a_message_reads_the_room_up_to_it_for_its_author(
    messages: Messages, user: User, room: Room, memory_storage: Storage
) -> None:
    # A script, or a tab closed right after sending, never sends `read`: own words are never unread.
    bob = await memory_storage.users.add("bob", b"not-a-real-hash")
    for person in (user, bob):
        await memory_storage.memberships.add(room.id, person)
    await post(messages, bob, room, "b1", "first")
    await post(messages, user, room, "a1", "hello")
    await post(messages, user, room, "a2", "again")

    markers = await memory_storage.memberships.get_many([(room.id, user.id), (room.id, bob.id)])
    assert (markers[(room.id, user.id)].read_seq, markers[(room.id, bob.id)].read_seq) == (3, 1)


async def test_an_invalid_body_stores_nothing(messages: Messages, user: User, room: Room) -> None:
    with pytest.raises(ValidationError):
        await post(messages, user, room, "c1", "   ")
    with pytest.raises(TooLarge):
        await post(messages, user, room, "c2", "x" * 4001)

    assert await messages.recent(room.id) == ([], False)
    assert await messages.stored_seq(room.id) == 0


async def test_recent_returns_the_newest_history_limit_messages(
    memory_storage: Storage, user: User, room: Room
) -> None:
    messages = Messages(memory_storage, history_limit=3)
    for i in range(5):
        await post(messages, user, room, f"c{i}", f"m{i}")

    recent, has_more = await messages.recent(room.id)

    assert [m.body for m in recent] == ["m2", "m3", "m4"]
    assert has_more is True


async def test_stored_seq_is_the_highest_seq_in_the_room(messages: Messages, user: User, room: Room) -> None:
    assert await messages.stored_seq(room.id) == 0
    for i in range(3):
        await post(messages, user, room, f"c{i}", "hi")

    assert await messages.stored_seq(room.id) == 3


async def test_after_and_backfill_read_later_messages_in_order(messages: Messages, user: User, room: Room) -> None:
    for i in range(5):
        await post(messages, user, room, f"c{i}", f"m{i}")

    page, has_more = await messages.after(room.id, 1, 2)
    missed = await messages.backfill(room.id, 3)

    assert [m.seq for m in page] == [2, 3] and has_more is True
    assert [m.seq for m in missed] == [4, 5]


async def test_the_page_before_a_seq_is_the_seqs_just_below_it(messages: Messages, user: User, room: Room) -> None:
    for i in range(1, 8):
        await post(messages, user, room, f"c{i}", f"m{i}")

    async def page(before: int, limit: int) -> tuple[list[int], bool]:
        found, more = await messages.before(room.id, before, limit)
        return [m.seq for m in found], more

    assert await page(7, 3) == ([4, 5, 6], True)
    assert await page(4, 3) == ([1, 2, 3], False)
    assert await page(3, 10) == ([1, 2], False)
    assert await page(1, 10) == ([], False)
    assert await page(100, 2) == ([], True)  # past the newest: nothing stored there


# -- archived rooms --------------------------------------------------------------


async def test_an_archived_room_refuses_posts_edits_and_deletions_with_a_clear_error(
    messages: Messages, memory_storage: Storage, user: User, room: Room
) -> None:
    message, _ = await post(messages, user, room, "c1", "before")
    archived = await memory_storage.rooms.set_archived(room.id, utcnow())
    assert archived is not None

    for attempt in (
        post(messages, user, archived, "c2", "after"),
        messages.edit(user, archived, message.id, "edited"),
        messages.delete(user, archived, message.id),
    ):
        with pytest.raises(RoomArchived, match="archived: it can be read, but nothing new can be posted"):
            await attempt


async def test_a_copy_of_the_room_from_before_it_was_archived_is_refused_by_storage(
    messages: Messages, memory_storage: Storage, user: User, room: Room
) -> None:
    await memory_storage.rooms.set_archived(room.id, utcnow())

    with pytest.raises(RoomArchived):
        await post(messages, user, room, "c1", "stale room")  # ``room`` says it is not archived

    assert await messages.stored_seq(room.id) == 0


async def test_one_write_for_several_rooms_refuses_only_the_senders_to_archived_or_deleted_rooms(
    messages: Messages, memory_storage: Storage, user: User, room: Room
) -> None:
    archived = await memory_storage.rooms.add("archived", user)
    deleted = await memory_storage.rooms.add("deleted", user)
    await memory_storage.rooms.set_archived(archived.id, utcnow())
    targets = (room, archived, deleted, room)
    news = [await messages.prepare(user, target, f"c{n}", "hi") for n, target in enumerate(targets)]
    await memory_storage.rooms.delete(deleted.id)

    # Submitted together: SQLite stores every room's waiting messages in one write.
    results = await asyncio.gather(*(messages.submit(new) for new in news), return_exceptions=True)

    assert [type(result).__name__ for result in results] == ["tuple", "RoomArchived", "RoomGone", "tuple"]
    assert [result[0].seq for result in results if isinstance(result, tuple)] == [1, 2]
    assert isinstance(results[2], NotFound)


async def test_a_page_asked_for_by_many_sockets_at_once_is_read_once_or_twice(
    messages: Messages, memory_storage: Storage, user: User, room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart brings a room's sockets back together, resuming from one seq.
    for n in range(3):
        await post(messages, user, room, f"c-{n}", f"m{n}")
    reads: list[int] = []
    read_after = memory_storage.messages.after

    async def counting(room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        reads.append(since_seq)
        await asyncio.sleep(0.01)  # a read takes a while: the others arrive meanwhile
        return await read_after(room_id, since_seq, limit)

    monkeypatch.setattr(memory_storage.messages, "after", counting)

    pages = await asyncio.gather(*(messages.after(room.id, 1, 50) for _ in range(20)))

    assert all([m.seq for m in page] == [2, 3] and not more for page, more in pages)
    assert 1 <= len(reads) <= 2
    pages[0][0].clear()  # each asker has a list of its own
    assert [m.seq for m in pages[1][0]] == [2, 3]


async def test_a_page_asked_for_after_a_message_is_acknowledged_holds_it(
    messages: Messages, user: User, room: Room
) -> None:
    first = asyncio.ensure_future(messages.after(room.id, 0, 50))  # a read under way...
    await asyncio.sleep(0)
    await post(messages, user, room, "c-1", "hello")  # ...when a message is acknowledged
    second = await messages.after(room.id, 0, 50)  # asked after: not answered by the read before

    await first
    assert [m.body for m in second[0]] == ["hello"]
