"""One contract suite for :class:`chat.storage.Storage`, run against every backend.

Each test gets a fresh, connected storage: an SQLite file in ``tmp_path`` or a
fresh database on the session's FerretDB server (MongoDB wire protocol).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from chat.errors import Conflict, RoomArchived, Unavailable
from chat.models import (
    Message,
    ModerationAction,
    ModerationEntry,
    NewMessage,
    Revision,
    Role,
    Room,
    RoomCounters,
    RoomKind,
    User,
    utcnow,
)
from chat.storage import Storage, open_storage
from tests.support.services import free_port
from tests.support.storage import connected_storage

BACKENDS = ["sqlite", "mongodb"]


@pytest.fixture(params=BACKENDS)
def storage_url(request: pytest.FixtureRequest) -> str:
    # getfixturevalue keeps FerretDB out of the sqlite runs entirely.
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "mongo_url")


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    async with connected_storage(storage_url) as store:
        yield store


@pytest.fixture
async def user(storage: Storage) -> User:
    return await storage.users.add("alice", b"$2b$04$fakehash")


@pytest.fixture
async def room(storage: Storage, user: User) -> Room:
    return await storage.rooms.add("lobby", user)


def new_message(room: Room, user: User, client_id: str, body: str = "hi") -> NewMessage:
    return NewMessage(room_id=room.id, user_id=user.id, username=user.username, body=body, client_id=client_id)


async def post_many(storage: Storage, room: Room, user: User, count: int) -> None:
    for i in range(count):
        await storage.messages.add(new_message(room, user, f"c{i}", f"message {i + 1}"))


def utc_in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


# -- users -----------------------------------------------------------------


async def test_an_added_user_can_be_read_back_by_id(storage: Storage) -> None:
    added = await storage.users.add("Alice", b"hash")

    found = await storage.users.get(added.id)

    assert found == added
    assert found.username == "Alice"


async def test_get_by_username_ignores_case(storage: Storage) -> None:
    added = await storage.users.add("Alice", b"hash")

    assert await storage.users.get_by_username("alice") == added
    assert await storage.users.get_by_username("ALICE") == added
    assert await storage.users.get_by_username("Alice") == added


async def test_unknown_users_are_none(storage: Storage) -> None:
    assert await storage.users.get("0" * 24) is None
    assert await storage.users.get_by_username("nobody") is None


async def test_a_username_taken_in_another_case_raises_conflict(storage: Storage) -> None:
    await storage.users.add("Alice", b"hash")

    with pytest.raises(Conflict):
        await storage.users.add("aLICE", b"other")

    assert await storage.users.get_by_username("alice") is not None


async def test_password_hash_bytes_round_trip_exactly(storage: Storage) -> None:
    password_hash = bytes(range(256))  # every byte value, including NUL
    added = await storage.users.add("bob", password_hash)

    found = await storage.users.get(added.id)

    assert isinstance(found.password_hash, bytes)
    assert found.password_hash == password_hash


# -- sessions --------------------------------------------------------------


async def test_an_added_session_can_be_read_back(storage: Storage, user: User) -> None:
    expires_at = utc_in(3600)
    added = await storage.sessions.add("s1", user.id, expires_at)

    found = await storage.sessions.get("s1")

    assert found is not None
    assert found.id == "s1" and found.user_id == user.id
    assert found == added or abs(found.expires_at - expires_at) < datetime.timedelta(milliseconds=1)


async def test_an_expired_session_reads_as_none(storage: Storage, user: User) -> None:
    await storage.sessions.add("old", user.id, utc_in(-1))

    assert await storage.sessions.get("old") is None


async def test_an_unknown_session_reads_as_none(storage: Storage) -> None:
    assert await storage.sessions.get("nope") is None


async def test_a_deleted_session_reads_as_none(storage: Storage, user: User) -> None:
    await storage.sessions.add("s1", user.id, utc_in(3600))
    await storage.sessions.add("s2", user.id, utc_in(3600))

    await storage.sessions.delete("s1")

    assert await storage.sessions.get("s1") is None
    assert await storage.sessions.get("s2") is not None


async def test_deleting_an_unknown_session_is_harmless(storage: Storage) -> None:
    await storage.sessions.delete("never-existed")


async def test_purge_expired_counts_and_removes_only_expired_sessions(storage: Storage, user: User) -> None:
    await storage.sessions.add("expired-1", user.id, utc_in(-60))
    await storage.sessions.add("expired-2", user.id, utc_in(-1))
    await storage.sessions.add("live", user.id, utc_in(3600))

    assert await storage.sessions.purge_expired() == 2
    assert await storage.sessions.purge_expired() == 0
    assert await storage.sessions.get("live") is not None


async def test_a_session_idles_out_at_its_idle_end_even_before_its_absolute_end(storage: Storage, user: User) -> None:
    await storage.sessions.add("idle", user.id, utc_in(3600), idle_expires_at=utc_in(-1))
    await storage.sessions.add("active", user.id, utc_in(3600), idle_expires_at=utc_in(600))

    assert await storage.sessions.get("idle") is None
    found = await storage.sessions.get("active")
    assert found is not None and found.idle_expires_at <= found.expires_at


async def test_a_session_without_an_idle_end_idles_out_at_its_absolute_end(storage: Storage, user: User) -> None:
    added = await storage.sessions.add("s1", user.id, utc_in(3600))

    assert added.idle_expires_at == added.expires_at


async def test_touch_moves_the_idle_end(storage: Storage, user: User) -> None:
    await storage.sessions.add("s1", user.id, utc_in(3600), idle_expires_at=utc_in(1))

    await storage.sessions.touch("s1", utc_in(1800))

    found = await storage.sessions.get("s1")
    assert found is not None and found.idle_expires_at > utc_in(1700)


async def test_touch_many_moves_idle_ends_forward_only_and_never_past_the_absolute_end(
    storage: Storage, user: User
) -> None:
    await storage.sessions.add("a", user.id, utc_in(3600), idle_expires_at=utc_in(60))
    await storage.sessions.add("b", user.id, utc_in(3600), idle_expires_at=utc_in(600))
    await storage.sessions.add("c", user.id, utc_in(120), idle_expires_at=utc_in(60))

    await storage.sessions.touch_many({"a": utc_in(1800), "b": utc_in(300), "c": utc_in(120), "unknown": utc_in(9)})

    a, b, c = [await storage.sessions.get(key) for key in "abc"]
    assert a is not None and utc_in(1790) < a.idle_expires_at <= utc_in(1800)
    assert b is not None and b.idle_expires_at > utc_in(590)  # not moved back
    assert c is not None and c.idle_expires_at <= c.expires_at
    await storage.sessions.touch_many({})


async def test_live_answers_for_many_sessions_at_once(storage: Storage, user: User) -> None:
    await storage.sessions.add("live-1", user.id, utc_in(3600))
    await storage.sessions.add("live-2", user.id, utc_in(3600), idle_expires_at=utc_in(60))
    await storage.sessions.add("expired", user.id, utc_in(-1))
    await storage.sessions.add("idled-out", user.id, utc_in(3600), idle_expires_at=utc_in(-1))

    assert await storage.sessions.live(["live-1", "live-2", "expired", "idled-out", "unknown"]) == {
        "live-1",
        "live-2",
    }
    assert await storage.sessions.live([]) == set()


async def test_get_many_reads_the_live_sessions_among_many_in_one_query(storage: Storage, user: User) -> None:
    await storage.sessions.add("live-1", user.id, utc_in(3600))
    await storage.sessions.add("live-2", user.id, utc_in(3600), idle_expires_at=utc_in(60))
    await storage.sessions.add("expired", user.id, utc_in(-1))
    await storage.sessions.add("idled-out", user.id, utc_in(3600), idle_expires_at=utc_in(-1))

    found = await storage.sessions.get_many(["live-1", "live-2", "expired", "idled-out", "unknown"])

    live_1 = await storage.sessions.get("live-1")
    assert sorted(found) == ["live-1", "live-2"]
    assert live_1 is not None and found["live-1"] == live_1
    assert await storage.sessions.get_many(["live-1"]) == {"live-1": live_1}
    assert await storage.sessions.get_many(["expired"]) == {}
    assert await storage.sessions.get_many([]) == {}


async def test_get_many_reads_users_by_id_whether_few_or_many_are_asked_for(storage: Storage, user: User) -> None:
    # Few ids and many take different queries on MongoDB (one each, or one $in).
    added = [await storage.users.add(f"user{n}", b"hash") for n in range(24)]
    others = [await storage.users.get(other.id) for other in added]
    alice = await storage.users.get(user.id)
    unknown = "0" * 24

    few = await storage.users.get_many([user.id, added[3].id, unknown])
    many = await storage.users.get_many([*(other.id for other in added), unknown])

    assert few == {user.id: alice, added[3].id: others[3]}
    assert many == {other.id: other for other in others if other is not None}
    assert len(many) == 24
    assert await storage.users.get_many([]) == {}


async def test_get_many_finds_only_live_sessions_among_many_ids(storage: Storage, user: User) -> None:
    for n in range(20):
        await storage.sessions.add(f"live-{n}", user.id, utc_in(3600))
        await storage.sessions.add(f"expired-{n}", user.id, utc_in(-1))

    found = await storage.sessions.get_many([f"{kind}-{n}" for kind in ("live", "expired") for n in range(20)])

    assert sorted(found) == sorted(f"live-{n}" for n in range(20))


async def test_delete_for_user_ends_every_session_of_that_user_but_the_one_kept(storage: Storage, user: User) -> None:
    bob = await storage.users.add("bob", b"hash")
    for session_id in ("a1", "a2", "a3"):
        await storage.sessions.add(session_id, user.id, utc_in(3600))
    await storage.sessions.add("b1", bob.id, utc_in(3600))

    ended = await storage.sessions.delete_for_user(user.id, keep="a2")

    assert sorted(ended) == ["a1", "a3"]
    assert await storage.sessions.live(["a1", "a2", "a3", "b1"]) == {"a2", "b1"}
    assert sorted(await storage.sessions.delete_for_user(user.id)) == ["a2"]


async def test_purge_removes_idled_out_sessions_too(storage: Storage, user: User) -> None:
    await storage.sessions.add("idled-out", user.id, utc_in(3600), idle_expires_at=utc_in(-1))
    await storage.sessions.add("live", user.id, utc_in(3600), idle_expires_at=utc_in(60))

    assert await storage.sessions.purge_expired() == 1
    assert await storage.sessions.live(["live"]) == {"live"}


async def test_a_password_can_be_replaced_and_an_account_disabled(storage: Storage, user: User) -> None:
    assert user.disabled is False

    await storage.users.set_password(user.id, b"new-hash")
    await storage.users.set_disabled(user.id, True)

    found = await storage.users.get(user.id)
    assert found is not None and found.password_hash == b"new-hash" and found.disabled is True
    await storage.users.set_disabled(user.id, False)
    found = await storage.users.get_by_username(user.username)
    assert found is not None and found.disabled is False


async def test_a_user_is_made_and_unmade_a_site_administrator(storage: Storage, user: User) -> None:
    assert user.admin is False
    await storage.users.set_admin(user.id, True)
    found = await storage.users.get(user.id)
    assert found is not None and found.admin is True
    await storage.users.set_admin(user.id, False)
    found = await storage.users.get_by_username(user.username)
    assert found is not None and found.admin is False


# -- rooms -----------------------------------------------------------------


async def test_an_added_room_can_be_read_back(storage: Storage, user: User) -> None:
    added = await storage.rooms.add("Lobby", user)

    found = await storage.rooms.get(added.id)

    assert found == added
    assert found.name == "Lobby"
    assert found.creator_id == user.id
    assert found.creator_username == user.username
    assert found.last_seq == 0


async def test_an_unknown_room_id_is_none(storage: Storage) -> None:
    assert await storage.rooms.get("0" * 24) is None


async def test_rooms_are_listed_newest_first(storage: Storage, user: User) -> None:
    names = ["first", "second", "third"]
    for name in names:
        await storage.rooms.add(name, user)
        # created_at has millisecond precision; keep the three apart.
        await asyncio.sleep(0.005)

    listed = await storage.rooms.list()

    assert [r.name for r in listed] == list(reversed(names))


async def test_listing_no_rooms_is_empty(storage: Storage) -> None:
    assert await storage.rooms.list() == []


async def test_a_room_name_taken_in_another_case_raises_conflict(storage: Storage, user: User) -> None:
    await storage.rooms.add("Lobby", user)

    with pytest.raises(Conflict):
        await storage.rooms.add("LOBBY", user)

    assert len(await storage.rooms.list()) == 1


async def test_many_rooms_are_read_by_id_in_one_query(storage: Storage, user: User) -> None:
    rooms = [await storage.rooms.add(f"room {i}", user) for i in range(3)]

    found = await storage.rooms.get_many([rooms[0].id, rooms[2].id, "0" * 24])

    assert found == {rooms[0].id: rooms[0], rooms[2].id: rooms[2]}
    assert await storage.rooms.get_many([]) == {}


async def test_private_rooms_and_dms_are_never_listed_but_found_by_id_and_dms_by_name(
    storage: Storage, user: User
) -> None:
    public = await storage.rooms.add("town square", user)
    private = await storage.rooms.add("the back room", user, RoomKind.PRIVATE)
    direct = await storage.rooms.add("dm:a:b", user, RoomKind.DIRECT)

    assert [room.id for room in await storage.rooms.list()] == [public.id]
    assert await storage.rooms.get(private.id) == private and private.kind is RoomKind.PRIVATE
    assert await storage.rooms.get_by_name("DM:A:B") == direct
    assert await storage.rooms.get_by_name("nowhere") is None
    assert await storage.rooms.get_by_name("the back room") is None  # its name is no unique handle
    assert (public.kind, public.topic, public.listed, private.listed) == (RoomKind.PUBLIC, "", True, False)


async def test_a_room_is_renamed_and_given_a_topic_and_a_taken_name_conflicts(storage: Storage, user: User) -> None:
    room = await storage.rooms.add("lobby", user)
    await storage.rooms.add("kitchen", user)

    renamed = await storage.rooms.update(room.id, name="Front Hall", topic="Say hello")
    assert renamed is not None and (renamed.name, renamed.topic) == ("Front Hall", "Say hello")
    assert await storage.rooms.get_by_name("front hall") == renamed
    assert await storage.rooms.get_by_name("lobby") is None
    with pytest.raises(Conflict):
        await storage.rooms.update(room.id, name="KITCHEN")
    topic_only = await storage.rooms.update(room.id, topic="")
    assert topic_only is not None and (topic_only.name, topic_only.topic) == ("Front Hall", "")
    assert await storage.rooms.update("0" * 24, topic="nobody") is None


async def test_a_new_public_room_takes_a_private_rooms_name(storage: Storage, user: User) -> None:
    private = await storage.rooms.add("Hideout", user, RoomKind.PRIVATE)

    public = await storage.rooms.add("hideout", user)

    assert await storage.rooms.get_by_name("HIDEOUT") == public
    assert await storage.rooms.get(private.id) == private
    assert [room.id for room in await storage.rooms.list("hideout")] == [public.id]


async def test_a_public_room_is_renamed_to_a_private_rooms_name(storage: Storage, user: User) -> None:
    private = await storage.rooms.add("Attic", user, RoomKind.PRIVATE)
    public = await storage.rooms.add("lobby", user)

    renamed = await storage.rooms.update(public.id, name="ATTIC")

    assert renamed is not None and (renamed.name, renamed.kind) == ("ATTIC", RoomKind.PUBLIC)
    assert await storage.rooms.get_by_name("attic") == renamed
    assert await storage.rooms.get(private.id) == private


async def test_a_private_room_shares_its_name_with_a_public_room_and_other_private_rooms(
    storage: Storage, user: User
) -> None:
    # named() is oldest first: each room gets its own millisecond
    public = await storage.rooms.add("Kitchen", user)
    await asyncio.sleep(0.002)
    first = await storage.rooms.add("kitchen", user, RoomKind.PRIVATE)
    await asyncio.sleep(0.002)
    second = await storage.rooms.add("KITCHEN", user, RoomKind.PRIVATE)
    await asyncio.sleep(0.002)
    third = await storage.rooms.add("pantry", user, RoomKind.PRIVATE)

    renamed = await storage.rooms.update(third.id, name="Kitchen", topic="Snacks")

    assert renamed is not None and (renamed.name, renamed.kind, renamed.topic) == (
        "Kitchen",
        RoomKind.PRIVATE,
        "Snacks",
    )
    assert await storage.rooms.get_by_name("kitchen") == public
    assert [room.id for room in await storage.rooms.named("kitChen")] == [public.id, first.id, second.id, third.id]
    assert [room.id for room in await storage.rooms.list("kitchen")] == [public.id]
    assert await storage.rooms.named("nowhere") == []


async def test_public_rooms_still_never_share_a_name_whatever_private_rooms_are_called(
    storage: Storage, user: User
) -> None:
    await storage.rooms.add("Cellar", user, RoomKind.PRIVATE)
    public = await storage.rooms.add("cellar", user)
    other = await storage.rooms.add("garden", user)

    with pytest.raises(Conflict):
        await storage.rooms.add("CELLAR", user)
    with pytest.raises(Conflict):
        await storage.rooms.update(other.id, name="Cellar")
    assert await storage.rooms.get(other.id) == other
    assert await storage.rooms.get_by_name("cellar") == public


async def test_a_dm_is_found_by_its_name_and_made_once_even_by_two_at_the_same_moment(
    storage: Storage, user: User
) -> None:
    decoy = await storage.rooms.add("dm:a:b", user, RoomKind.PRIVATE)  # storage takes any name

    made = await asyncio.gather(
        storage.rooms.add("dm:a:b", user, RoomKind.DIRECT),
        storage.rooms.add("dm:a:b", user, RoomKind.DIRECT),
        return_exceptions=True,
    )

    [direct] = [room for room in made if isinstance(room, Room)]
    assert [type(refused) for refused in made if not isinstance(refused, Room)] == [Conflict]
    assert await storage.rooms.get_by_name("DM:A:B") == direct and direct.kind is RoomKind.DIRECT
    assert {room.id for room in await storage.rooms.named("dm:a:b")} == {decoy.id, direct.id}


async def test_moderation_is_logged_with_who_did_what_and_when_newest_first(
    storage: Storage, room: Room, user: User
) -> None:
    first = ModerationEntry(room.id, user.id, "alice", ModerationAction.SET_TOPIC, "", "Be kind", utcnow())
    second = ModerationEntry(room.id, user.id, "alice", ModerationAction.BAN, "u2", "", utcnow())
    await storage.moderation.add(first)
    await asyncio.sleep(0.002)  # entries of one millisecond come in no particular order
    second = dataclasses.replace(second, at=utcnow())
    await storage.moderation.add(second)
    await storage.moderation.add(dataclasses.replace(first, room_id="elsewhere"))

    assert await storage.moderation.list(room.id) == [second, first]
    assert await storage.moderation.list(room.id, limit=1) == [second]


async def test_public_rooms_are_searched_by_name_and_paged(storage: Storage, user: User) -> None:
    names = ["Cooking", "cook_book", "100% fun", "Gardening", "Book club"]
    for name in names:
        await storage.rooms.add(name, user)
        await asyncio.sleep(0.002)  # each its own millisecond: newest first is then one order
    await storage.rooms.add("secret cooking", user, RoomKind.PRIVATE)

    def named(rooms: list[Room]) -> list[str]:
        return [room.name for room in rooms]

    assert named(await storage.rooms.list("COOK")) == ["cook_book", "Cooking"]
    assert named(await storage.rooms.list("_")) == ["cook_book"]  # a plain substring, no wildcards
    assert named(await storage.rooms.list("%")) == ["100% fun"]
    assert named(await storage.rooms.list("(")) == []
    assert named(await storage.rooms.list(limit=2)) == ["Book club", "Gardening"]
    assert named(await storage.rooms.list(limit=2, offset=2)) == ["100% fun", "cook_book"]


async def test_a_room_knows_when_its_latest_message_was_stored(storage: Storage, room: Room, user: User) -> None:
    assert room.last_message_at is None
    message, _ = await storage.messages.add(new_message(room, user, "c1"))

    stored = await storage.rooms.get(room.id)
    assert stored is not None and stored.last_message_at == message.created_at


# -- memberships and bans -----------------------------------------------------------


async def test_a_membership_is_added_once_and_read_by_room_and_by_user(
    storage: Storage, room: Room, user: User
) -> None:
    bob = await storage.users.add("bob", b"$2b$04$fakehash")
    other = await storage.rooms.add("other", bob)

    owner = await storage.memberships.add(room.id, user, Role.OWNER)
    again = await storage.memberships.add(room.id, user)  # already a member: unchanged
    await storage.memberships.add(room.id, bob)
    await asyncio.sleep(0.002)  # joined in one millisecond, rooms_of would order bob's two by random ids
    await storage.memberships.add(other.id, bob, Role.OWNER)

    assert again == owner and owner.role is Role.OWNER and owner.username == "alice"
    assert await storage.memberships.get(room.id, user.id) == owner
    assert await storage.memberships.get(other.id, user.id) is None
    assert [(m.user_id, m.role) for m in await storage.memberships.members_of(room.id)] == [
        (user.id, Role.OWNER),
        (bob.id, Role.MEMBER),
    ]
    assert [m.room_id for m in await storage.memberships.rooms_of(bob.id)] == [room.id, other.id]
    assert await storage.memberships.counts([room.id, other.id, "0" * 24]) == {room.id: 2, other.id: 1}
    found = await storage.memberships.get_many([(room.id, bob.id), (other.id, user.id), (other.id, bob.id)])
    assert set(found) == {(room.id, bob.id), (other.id, bob.id)}


async def test_a_member_changes_role_and_leaves(storage: Storage, room: Room, user: User) -> None:
    await storage.memberships.add(room.id, user)

    promoted = await storage.memberships.set_role(room.id, user.id, Role.MODERATOR)
    assert promoted is not None and promoted.role is Role.MODERATOR
    assert await storage.memberships.remove(room.id, user.id) is True
    assert await storage.memberships.remove(room.id, user.id) is False
    assert await storage.memberships.get(room.id, user.id) is None
    assert await storage.memberships.set_role(room.id, user.id, Role.MEMBER) is None
    assert await storage.memberships.rooms_of(user.id) == []


async def test_a_read_marker_only_moves_forward_and_only_for_members(storage: Storage, room: Room, user: User) -> None:
    await storage.memberships.add(room.id, user)

    assert await storage.memberships.mark_read(room.id, user.id, 5) == 5
    assert await storage.memberships.mark_read(room.id, user.id, 3) == 5  # another tab, behind: no step back
    assert await storage.memberships.mark_read(room.id, user.id, 9) == 9
    membership = await storage.memberships.get(room.id, user.id)
    assert membership is not None and membership.read_seq == 9
    assert await storage.memberships.mark_read(room.id, "not-a-member", 4) is None


async def test_many_read_markers_move_forward_in_one_write(storage: Storage, room: Room, user: User) -> None:
    other = await storage.rooms.add("elsewhere", user)
    bob = await storage.users.add("bob", b"$2b$04$fakehash")
    for room_id, person in ((room.id, user), (other.id, user), (room.id, bob)):
        await storage.memberships.add(room_id, person)
    await storage.memberships.mark_read(room.id, bob.id, 8)

    await storage.memberships.advance_read_many(
        {(room.id, user.id): 4, (other.id, user.id): 2, (room.id, bob.id): 5, (room.id, "not-a-member"): 3}
    )

    markers = await storage.memberships.get_many([(room.id, user.id), (other.id, user.id), (room.id, bob.id)])
    assert {key: m.read_seq for key, m in markers.items()} == {
        (room.id, user.id): 4,
        (other.id, user.id): 2,
        (room.id, bob.id): 8,  # never back
    }
    assert await storage.memberships.get(room.id, "not-a-member") is None
    await storage.memberships.advance_read_many({})


async def test_mentions_are_counted_after_each_rooms_marker_and_forgotten_once_read(
    storage: Storage, room: Room, user: User
) -> None:
    other = await storage.rooms.add("other", user)
    await storage.mentions.add_many([(room.id, user.id, 3), (room.id, user.id, 7), (other.id, user.id, 2)])
    await storage.mentions.add_many([(room.id, user.id, 7), (room.id, "someone", 8)])  # a resend: kept once

    assert await storage.mentions.counts(user.id, {room.id: 0, other.id: 0}) == {room.id: 2, other.id: 1}
    assert await storage.mentions.counts(user.id, {room.id: 3}) == {room.id: 1}
    await storage.mentions.clear(room.id, user.id, 7)
    assert await storage.mentions.counts(user.id, {room.id: 0, other.id: 0}) == {other.id: 1}
    assert await storage.mentions.counts("someone", {room.id: 0}) == {room.id: 1}


async def test_a_ban_is_kept_once_and_lifted(storage: Storage, room: Room, user: User) -> None:
    bob = await storage.users.add("bob", b"$2b$04$fakehash")

    ban = await storage.bans.add(room.id, bob.id, user.id)
    assert await storage.bans.add(room.id, bob.id, "someone-else") == ban  # the first ban stands
    assert (ban.user_id, ban.by_user_id) == (bob.id, user.id)
    assert await storage.bans.get(room.id, bob.id) == ban
    assert await storage.bans.get(room.id, user.id) is None
    assert await storage.bans.remove(room.id, bob.id) is True
    assert await storage.bans.get(room.id, bob.id) is None


async def test_bans_are_read_many_pairs_at_once(storage: Storage, room: Room, user: User) -> None:
    bob = await storage.users.add("bob", b"$2b$04$fakehash")
    other = await storage.rooms.add("elsewhere", user)
    ban = await storage.bans.add(other.id, bob.id, user.id)

    pairs = [(room.id, bob.id), (other.id, bob.id), (other.id, user.id), ("no-such-room", bob.id)]
    assert await storage.bans.get_many(pairs) == {(other.id, bob.id): ban}
    assert await storage.bans.get_many([]) == {}


# -- messages: seq and idempotency ------------------------------------------


async def test_add_assigns_seq_1_2_3_in_order(storage: Storage, room: Room, user: User) -> None:
    seqs = []
    for i in range(3):
        message, created = await storage.messages.add(new_message(room, user, f"c{i}"))
        assert created is True
        seqs.append(message.seq)

    assert seqs == [1, 2, 3]


async def test_each_room_has_its_own_seq_counter(storage: Storage, room: Room, user: User) -> None:
    other = await storage.rooms.add("other", user)

    a1, _ = await storage.messages.add(new_message(room, user, "a1"))
    b1, _ = await storage.messages.add(new_message(other, user, "b1"))
    a2, _ = await storage.messages.add(new_message(room, user, "a2"))
    b2, _ = await storage.messages.add(new_message(other, user, "b2"))

    assert (a1.seq, a2.seq) == (1, 2)
    assert (b1.seq, b2.seq) == (1, 2)


async def test_acknowledged_seqs_cover_every_stored_message_of_many_rooms_in_one_query(
    storage: Storage, room: Room, user: User
) -> None:
    other = await storage.rooms.add("other", user)
    quiet = await storage.rooms.add("quiet", user)
    for i in range(3):
        await storage.messages.add(new_message(room, user, f"r{i}"))
    await storage.messages.add(new_message(other, user, "o1"))
    await storage.messages.add(new_message(room, user, "r0"))  # a resend stores nothing

    counted = await storage.messages.acknowledged_seqs([room.id, other.id, quiet.id, "0" * 24])

    assert counted == {room.id: 3, other.id: 1, quiet.id: 0}
    assert await storage.messages.acknowledged_seqs([other.id]) == {other.id: 1}
    assert await storage.messages.acknowledged_seqs([]) == {}


# -- revisions (edit and delete) ----------------------------------------------------


async def test_an_edit_changes_the_body_and_takes_the_rooms_next_rev(storage: Storage, room: Room, user: User) -> None:
    first, _ = await storage.messages.add(new_message(room, user, "c1", "helo"))
    second, _ = await storage.messages.add(new_message(room, user, "c2", "world"))
    at = utcnow()

    edited = await storage.messages.revise(Revision(room.id, first.id, "hello", at, "<p>hello</p>"))

    assert edited is not None
    assert (edited.body, edited.edited_at, edited.deleted_at, edited.rev) == ("hello", at, None, 1)
    assert edited.html == "<p>hello</p>"
    assert (edited.seq, edited.created_at, edited.client_id) == (first.seq, first.created_at, first.client_id)
    assert await storage.messages.get(room.id, first.id) == edited
    assert await storage.messages.get(room.id, second.id) == second  # rev 0: never revised
    assert await storage.messages.counters([room.id]) == {room.id: RoomCounters(seq=2, rev=1)}
    latest, _ = await storage.messages.latest(room.id, 10)
    assert [m.body for m in latest] == ["hello", "world"]


async def test_a_deletion_keeps_the_place_and_empties_the_body_in_storage(
    storage: Storage, room: Room, user: User
) -> None:
    secret = dataclasses.replace(new_message(room, user, "c1", "a **secret**"), html="<p>a <strong>secret</strong></p>")
    message, _ = await storage.messages.add(secret)
    assert message.html == "<p>a <strong>secret</strong></p>"
    assert await storage.messages.get(room.id, message.id) == message
    at = utcnow()

    deleted = await storage.messages.revise(Revision(room.id, message.id, None, at))

    assert deleted is not None
    assert (deleted.seq, deleted.body, deleted.html, deleted.deleted_at, deleted.rev) == (message.seq, "", "", at, 1)
    after, _ = await storage.messages.after(room.id, 0, 10)
    assert [(m.seq, m.body) for m in after] == [(1, "")]


async def test_revisions_are_read_back_in_rev_order_after_a_cursor(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 5)
    stored, _ = await storage.messages.after(room.id, 0, 10)
    for message in (stored[3], stored[1], stored[3], stored[0]):  # message 4 twice
        await storage.messages.revise(Revision(room.id, message.id, f"{message.body}!", utcnow()))

    revised, more = await storage.messages.revised_after(room.id, 0, 10)
    assert [(m.seq, m.rev) for m in revised] == [(2, 2), (4, 3), (1, 4)] and not more
    page, more = await storage.messages.revised_after(room.id, 2, 1)
    assert [(m.seq, m.rev) for m in page] == [(4, 3)] and more
    assert (await storage.messages.counters([room.id]))[room.id].rev == 4


async def test_revising_a_message_of_another_room_or_none_changes_nothing(
    storage: Storage, room: Room, user: User
) -> None:
    other = await storage.rooms.add("other", user)
    message, _ = await storage.messages.add(new_message(room, user, "c1", "stay"))

    assert await storage.messages.revise(Revision(other.id, message.id, "moved?", utcnow())) is None
    assert await storage.messages.revise(Revision(room.id, "0" * 24, "ghost", utcnow())) is None
    assert await storage.messages.get(other.id, message.id) is None
    assert await storage.messages.get(room.id, message.id) == message
    assert await storage.messages.counters([room.id, other.id]) == {
        room.id: RoomCounters(1, 0),
        other.id: RoomCounters(0, 0),
    }


async def test_racing_revisions_of_one_message_leave_the_highest_rev_stored(
    storage: Storage, room: Room, user: User
) -> None:
    message, _ = await storage.messages.add(new_message(room, user, "c1", "v0"))

    results = await asyncio.gather(
        *(storage.messages.revise(Revision(room.id, message.id, f"v{i}", utcnow())) for i in range(1, 9))
    )

    revs = [result.rev for result in results if result is not None]
    assert len(set(revs)) == 8  # each revision its own rev, even where $inc is not atomic
    stored = await storage.messages.get(room.id, message.id)
    assert stored is not None and stored.rev == max(revs)
    assert stored.body == next(r.body for r in results if r is not None and r.rev == stored.rev)


async def test_added_message_carries_what_was_sent(storage: Storage, room: Room, user: User) -> None:
    message, _ = await storage.messages.add(new_message(room, user, "c1", "hello, world"))

    assert message.room_id == room.id
    assert message.user_id == user.id
    assert message.username == user.username
    assert message.body == "hello, world"
    assert message.client_id == "c1"
    assert message.id


async def test_resending_a_client_id_returns_the_original_and_stores_nothing(
    storage: Storage, room: Room, user: User
) -> None:
    original, created = await storage.messages.add(new_message(room, user, "dup", "first"))
    assert created is True

    again, created_again = await storage.messages.add(new_message(room, user, "dup", "second body"))

    assert created_again is False
    assert again == original
    assert again.body == "first"
    stored, has_more = await storage.messages.latest(room.id, 10)
    assert stored == [original]
    assert has_more is False


async def test_the_same_client_id_from_another_user_is_a_new_message(storage: Storage, room: Room, user: User) -> None:
    bob = await storage.users.add("bob", b"hash")

    mine, _ = await storage.messages.add(new_message(room, user, "same"))
    theirs, created = await storage.messages.add(new_message(room, bob, "same"))

    assert created is True
    assert theirs.id != mine.id
    assert theirs.seq == 2


async def test_the_same_client_id_in_another_room_is_a_new_message(storage: Storage, room: Room, user: User) -> None:
    other = await storage.rooms.add("other", user)

    here, _ = await storage.messages.add(new_message(room, user, "same"))
    there, created = await storage.messages.add(new_message(other, user, "same"))

    assert created is True
    assert there.id != here.id
    assert there.room_id == other.id
    assert there.seq == 1


async def test_concurrent_adds_get_distinct_seqs_and_are_all_stored(storage: Storage, room: Room, user: User) -> None:
    results = await asyncio.gather(
        *(storage.messages.add(new_message(room, user, f"c{i}", f"body {i}")) for i in range(30))
    )

    assert all(created for _, created in results)
    seqs = [message.seq for message, _ in results]
    assert len(set(seqs)) == 30
    stored, has_more = await storage.messages.latest(room.id, 100)
    assert has_more is False
    assert sorted(m.client_id for m in stored) == sorted(f"c{i}" for i in range(30))
    assert [m.seq for m in stored] == sorted(seqs)


async def test_writers_in_two_processes_get_contiguous_seqs_with_no_holes(
    storage_url: str, storage: Storage, room: Room, user: User
) -> None:
    # A second storage on the same database is what a second chat process has.
    async with connected_storage(storage_url) as other:
        results = await asyncio.gather(
            *(
                (storage if i % 2 else other).messages.add(new_message(room, user, f"c{i}", f"body {i}"))
                for i in range(40)
            )
        )

    assert all(created for _, created in results)
    assert sorted(message.seq for message, _ in results) == list(range(1, 41))
    stored, _ = await storage.messages.latest(room.id, 100)
    assert [m.seq for m in stored] == list(range(1, 41))


async def test_add_many_stores_a_batch_in_the_order_given_with_consecutive_seqs(
    storage: Storage, room: Room, user: User
) -> None:
    await storage.messages.add(new_message(room, user, "first"))

    results = await storage.messages.add_many([new_message(room, user, f"b{i}", f"body {i}") for i in range(5)])

    assert [(m.client_id, m.seq, created) for m, created in results] == [(f"b{i}", i + 2, True) for i in range(5)]
    stored, _ = await storage.messages.latest(room.id, 10)
    assert [m.client_id for m in stored] == ["first", "b0", "b1", "b2", "b3", "b4"]
    assert (await storage.messages.add(new_message(room, user, "next")))[0].seq == 7  # the counter moved past all


async def test_a_resend_inside_a_batch_returns_the_original_and_the_rest_follow_without_a_hole(
    storage: Storage, room: Room, user: User
) -> None:
    await storage.messages.add(new_message(room, user, "again", "the original"))

    results = await storage.messages.add_many(
        [new_message(room, user, "x1"), new_message(room, user, "again", "a resend"), new_message(room, user, "x2")]
    )

    assert [(m.client_id, m.seq, created) for m, created in results] == [
        ("x1", 2, True),
        ("again", 1, False),
        ("x2", 3, True),
    ]
    assert results[1][0].body == "the original"
    stored, _ = await storage.messages.latest(room.id, 10)
    assert [m.seq for m in stored] == [1, 2, 3]


async def test_the_same_client_id_twice_in_one_batch_is_stored_once(storage: Storage, room: Room, user: User) -> None:
    results = await storage.messages.add_many(
        [new_message(room, user, "dup", "first"), new_message(room, user, "x"), new_message(room, user, "dup", "again")]
    )

    assert [(m.client_id, m.seq, created) for m, created in results] == [
        ("dup", 1, True),
        ("x", 2, True),
        ("dup", 1, False),
    ]
    assert results[2][0].body == "first"
    stored, _ = await storage.messages.latest(room.id, 10)
    assert [m.client_id for m in stored] == ["dup", "x"]


async def test_batches_from_two_processes_interleave_with_no_holes_and_nothing_twice(
    storage_url: str, storage: Storage, room: Room, user: User
) -> None:
    async with connected_storage(storage_url) as other:
        batches = await asyncio.gather(
            *(
                (storage if b % 2 else other).messages.add_many(
                    [new_message(room, user, f"b{b}-{i}") for i in range(5)]
                )
                for b in range(8)
            )
        )

    results = [result for batch in batches for result in batch]
    assert all(created for _, created in results)
    assert sorted(message.seq for message, _ in results) == list(range(1, 41))
    for batch in batches:  # each batch kept its order
        assert [m.seq for m, _ in batch] == sorted(m.seq for m, _ in batch)
    stored, _ = await storage.messages.latest(room.id, 100)
    assert [m.seq for m in stored] == list(range(1, 41))
    assert len({m.client_id for m in stored}) == 40


async def test_adding_to_an_unknown_room_raises_lookup_error(storage: Storage, user: User) -> None:
    ghost = NewMessage(room_id="0" * 24, user_id=user.id, username=user.username, body="hi", client_id="c1")

    with pytest.raises(LookupError):
        await storage.messages.add(ghost)


# -- messages: reading ------------------------------------------------------


async def test_latest_returns_the_newest_n_in_ascending_seq(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 5)

    messages, has_more = await storage.messages.latest(room.id, 3)

    assert [m.seq for m in messages] == [3, 4, 5]
    assert [m.body for m in messages] == ["message 3", "message 4", "message 5"]
    assert has_more is True


async def test_latest_with_exactly_n_messages_has_no_more(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 3)

    messages, has_more = await storage.messages.latest(room.id, 3)

    assert [m.seq for m in messages] == [1, 2, 3]
    assert has_more is False


async def test_latest_with_fewer_than_n_messages_returns_all(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 2)

    messages, has_more = await storage.messages.latest(room.id, 10)

    assert [m.seq for m in messages] == [1, 2]
    assert has_more is False


async def test_latest_of_an_empty_room_is_empty(storage: Storage, room: Room) -> None:
    assert await storage.messages.latest(room.id, 10) == ([], False)


async def test_latest_only_reads_its_own_room(storage: Storage, room: Room, user: User) -> None:
    other = await storage.rooms.add("other", user)
    await post_many(storage, other, user, 3)

    assert await storage.messages.latest(room.id, 10) == ([], False)


async def test_after_returns_later_messages_ascending(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 5)

    messages, has_more = await storage.messages.after(room.id, 2, 10)

    assert [m.seq for m in messages] == [3, 4, 5]
    assert has_more is False


async def test_after_pages_with_has_more(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 5)

    first, more_after_first = await storage.messages.after(room.id, 0, 2)
    second, more_after_second = await storage.messages.after(room.id, first[-1].seq, 2)
    third, more_after_third = await storage.messages.after(room.id, second[-1].seq, 2)

    assert [m.seq for m in first] == [1, 2] and more_after_first is True
    assert [m.seq for m in second] == [3, 4] and more_after_second is True
    assert [m.seq for m in third] == [5] and more_after_third is False


async def test_after_with_exactly_limit_remaining_has_no_more(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 4)

    messages, has_more = await storage.messages.after(room.id, 1, 3)

    assert [m.seq for m in messages] == [2, 3, 4]
    assert has_more is False


async def test_after_the_last_seq_is_empty(storage: Storage, room: Room, user: User) -> None:
    await post_many(storage, room, user, 3)

    assert await storage.messages.after(room.id, 3, 10) == ([], False)


async def test_created_at_is_utc_and_round_trips_at_millisecond_precision(
    storage: Storage, room: Room, user: User
) -> None:
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(milliseconds=1)
    added = [(await storage.messages.add(new_message(room, user, f"c{i}")))[0] for i in range(5)]
    after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=1)

    stored, _ = await storage.messages.latest(room.id, 10)

    assert stored == added  # every field, created_at included, survives the round trip
    for message in stored:
        assert message.created_at.tzinfo is not None
        assert message.created_at.utcoffset() == datetime.timedelta(0)
        assert message.created_at.microsecond % 1000 == 0
        assert before <= message.created_at <= after


async def test_user_and_room_created_at_are_utc_and_round_trip(storage: Storage, user: User, room: Room) -> None:
    found_user = await storage.users.get(user.id)
    found_room = await storage.rooms.get(room.id)

    assert found_user.created_at == user.created_at
    assert found_room.created_at == room.created_at
    assert found_user.created_at.utcoffset() == datetime.timedelta(0)
    assert found_room.created_at.utcoffset() == datetime.timedelta(0)


# -- lifecycle -------------------------------------------------------------


async def test_connecting_twice_is_harmless(storage: Storage, room: Room, user: User) -> None:
    await storage.messages.add(new_message(room, user, "c1"))

    await storage.connect()

    await storage.ping()
    message, created = await storage.messages.add(new_message(room, user, "c2"))
    assert created is True and message.seq == 2


async def test_ping_answers_on_a_connected_storage(storage: Storage) -> None:
    await storage.ping()


async def test_a_new_storage_on_the_same_database_sees_earlier_data(storage_url: str) -> None:
    async with connected_storage(storage_url) as first:
        user = await first.users.add("alice", b"hash")
        room = await first.rooms.add("lobby", user)
        message, _ = await first.messages.add(new_message(room, user, "c1", "remember me"))
        await first.sessions.add("s1", user.id, utc_in(3600))

    async with connected_storage(storage_url) as second:
        assert await second.users.get_by_username("ALICE") == user
        stored_room = Room(**{**room.__dict__, "last_seq": 1, "last_message_at": message.created_at})
        assert await second.rooms.get(room.id) == stored_room
        assert await second.messages.latest(room.id, 10) == ([message], False)
        assert await second.sessions.get("s1") is not None
        # The seq counter survives too: the next message is 2, not 1 again.
        next_message, _ = await second.messages.add(new_message(room, user, "c2"))
        assert next_message.seq == 2


# -- site administration: counts, sessions listed, rooms archived, deleted, restored --


async def test_users_rooms_messages_and_live_sessions_are_counted(storage: Storage, room: Room, user: User) -> None:
    bob = await storage.users.add("bob", b"hash")
    await storage.rooms.add("other", bob, RoomKind.PRIVATE)
    await post_many(storage, room, user, 3)
    await storage.sessions.add("live", user.id, utc_in(3600))
    await storage.sessions.add("expired", user.id, utc_in(-1))
    await storage.sessions.add("idled-out", bob.id, utc_in(3600), idle_expires_at=utc_in(-1))

    assert await storage.users.count() == 2
    assert await storage.rooms.count() == 2
    assert await storage.messages.count() == 3
    assert await storage.sessions.count_live() == 1


async def test_live_sessions_are_listed_newest_first_for_one_user_or_everyone(storage: Storage, user: User) -> None:
    bob = await storage.users.add("bob", b"hash")
    for session_id, owner in (("a-old", user), ("b-only", bob), ("a-new", user)):
        await storage.sessions.add(session_id, owner.id, utc_in(3600))
        await asyncio.sleep(0.005)  # created_at has millisecond precision
    await storage.sessions.add("a-expired", user.id, utc_in(-1))

    assert [s.id for s in await storage.sessions.list_live(user.id)] == ["a-new", "a-old"]
    assert [s.id for s in await storage.sessions.list_live()] == ["a-new", "b-only", "a-old"]
    assert [s.id for s in await storage.sessions.list_live(limit=1)] == ["a-new"]
    listed = (await storage.sessions.list_live(bob.id))[0]
    assert listed == await storage.sessions.get("b-only")
    assert await storage.sessions.list_live("0" * 24) == []


async def test_an_archived_room_is_readable_and_refuses_new_messages_and_revisions(
    storage: Storage, room: Room, user: User
) -> None:
    first, _ = await storage.messages.add(new_message(room, user, "c1", "before"))
    at = utcnow()

    archived = await storage.rooms.set_archived(room.id, at)

    assert archived is not None and archived.archived_at == at and archived.archived
    assert (await storage.rooms.get(room.id)) == archived
    with pytest.raises(RoomArchived) as refused:
        await storage.messages.add(new_message(room, user, "c2", "after"))
    assert refused.value.room_ids == {room.id}
    with pytest.raises(RoomArchived):
        await storage.messages.revise(Revision(room.id, first.id, "edited", utcnow()))
    with pytest.raises(RoomArchived):
        await storage.messages.revise(Revision(room.id, first.id, None, utcnow()))
    stored, _ = await storage.messages.after(room.id, 0, 10)
    assert stored == [first]
    assert await storage.messages.counters([room.id]) == {room.id: RoomCounters(seq=1, rev=0)}

    unarchived = await storage.rooms.set_archived(room.id, None)

    assert unarchived is not None and unarchived.archived_at is None
    second, created = await storage.messages.add(new_message(room, user, "c2", "after"))
    assert created and second.seq == 2
    assert await storage.rooms.set_archived("0" * 24, utcnow()) is None


async def test_a_room_is_deleted_with_everything_in_it_and_nothing_else(
    storage: Storage, room: Room, user: User
) -> None:
    other = await storage.rooms.add("other", user)
    bob = await storage.users.add("bob", b"hash")
    for target in (room, other):
        await storage.memberships.add(target.id, user, Role.OWNER)
        await storage.bans.add(target.id, bob.id, user.id)
        await storage.mentions.add_many([(target.id, user.id, 1)])
        await storage.moderation.add(
            ModerationEntry(target.id, user.id, user.username, ModerationAction.BAN, bob.id, "", utcnow())
        )
        await post_many(storage, target, user, 2)

    assert await storage.rooms.delete(room.id) is True

    assert await storage.rooms.get(room.id) is None
    assert await storage.rooms.get_by_name(room.name) is None
    assert await storage.messages.after(room.id, 0, 10) == ([], False)
    assert await storage.memberships.get(room.id, user.id) is None
    assert await storage.bans.get(room.id, bob.id) is None
    assert await storage.moderation.list(room.id) == []
    assert await storage.mentions.counts(user.id, {room.id: 0, other.id: 0}) == {other.id: 1}
    assert len((await storage.messages.after(other.id, 0, 10))[0]) == 2
    assert await storage.memberships.get(other.id, user.id) is not None
    assert await storage.bans.get(other.id, bob.id) is not None
    assert len(await storage.moderation.list(other.id)) == 1
    assert await storage.rooms.delete(room.id) is False
    with pytest.raises(LookupError):
        await storage.messages.add(new_message(room, user, "late"))
    # The name is free again.
    assert (await storage.rooms.add(room.name, user)).id != room.id


def exported(room: Room, user: User, seq: int, **changes: object) -> Message:
    """A message as an export carries it, for ``room``."""
    message = Message(
        id=f"exported-{seq}",
        room_id=room.id,
        seq=seq,
        user_id=user.id,
        username=user.username,
        body=f"message {seq}",
        created_at=datetime.datetime(2025, 1, 2, 3, 4, seq, 567000, tzinfo=datetime.UTC),
        client_id=f"client-{seq}",
        html=f"<p>message {seq}</p>",
    )
    return dataclasses.replace(message, **changes)  # type: ignore[arg-type]


async def test_restored_messages_keep_seqs_times_edits_and_deletions(storage: Storage, room: Room, user: User) -> None:
    edited_at = datetime.datetime(2025, 1, 3, tzinfo=datetime.UTC)
    messages = [
        exported(room, user, 1),
        exported(room, user, 2, body="changed", edited_at=edited_at, rev=2),
        exported(room, user, 3, body="", html="", deleted_at=edited_at, rev=1),
    ]

    assert await storage.messages.restore(messages) == 3

    stored, more = await storage.messages.after(room.id, 0, 10)
    assert not more
    keep = ("seq", "user_id", "username", "body", "html", "created_at", "client_id", "edited_at", "deleted_at", "rev")
    assert [[getattr(m, f) for f in keep] for m in stored] == [[getattr(m, f) for f in keep] for m in messages]
    assert await storage.messages.counters([room.id]) == {room.id: RoomCounters(seq=3, rev=2)}
    found = await storage.rooms.get(room.id)
    assert found is not None and found.last_message_at == messages[-1].created_at
    # What comes next follows on: the next seq, the next rev.
    fourth, _ = await storage.messages.add(new_message(room, user, "c4", "live"))
    assert fourth.seq == 4
    revised = await storage.messages.revise(Revision(room.id, stored[0].id, "edited live", utcnow()))
    assert revised is not None and revised.rev == 3


async def test_restoring_again_stores_nothing_and_never_moves_counters_down(
    storage: Storage, room: Room, user: User
) -> None:
    messages = [exported(room, user, seq) for seq in (1, 2, 3)]
    assert await storage.messages.restore(messages[:2]) == 2

    assert await storage.messages.restore(messages) == 1
    assert await storage.messages.restore(messages) == 0
    # The same client_id again under another seq is the same message: skipped.
    assert await storage.messages.restore([exported(room, user, 9, client_id="client-1")]) == 0

    stored, _ = await storage.messages.after(room.id, 0, 10)
    assert [m.seq for m in stored] == [1, 2, 3]
    assert await storage.messages.counters([room.id]) == {room.id: RoomCounters(seq=3, rev=0)}
    assert await storage.messages.restore([]) == 0


async def test_restoring_works_in_an_archived_room_and_never_in_an_unknown_one(
    storage: Storage, room: Room, user: User
) -> None:
    await storage.rooms.set_archived(room.id, utcnow())

    assert await storage.messages.restore([exported(room, user, 1)]) == 1
    with pytest.raises(LookupError):
        await storage.messages.restore([dataclasses.replace(exported(room, user, 1), room_id="0" * 24)])


async def test_a_room_restored_next_to_its_original_gets_ids_of_its_own(
    storage: Storage, room: Room, user: User
) -> None:
    original, _ = await storage.messages.add(new_message(room, user, "c1", "hello"))
    copy = await storage.rooms.add("copy", user)

    assert await storage.messages.restore([dataclasses.replace(original, room_id=copy.id)]) == 1

    [restored], _ = await storage.messages.after(copy.id, 0, 10)
    assert restored.id != original.id and restored.body == "hello"
    assert await storage.messages.get(room.id, original.id) == original


# -- backend specifics -----------------------------------------------------


def _index_keys(info: dict) -> dict[tuple[tuple[str, int], ...], dict]:
    return {tuple((field, int(direction)) for field, direction in spec["key"]): spec for spec in info.values()}


async def test_mongodb_creates_the_unique_indexes(mongo_url: str) -> None:
    async with connected_storage(mongo_url) as store:
        users = _index_keys(await store.db.users.index_information())
        messages = _index_keys(await store.db.messages.index_information())
        rooms = _index_keys(await store.db.rooms.index_information())

    assert users[(("username_lower", 1),)].get("unique") is True
    assert rooms[(("name_key", 1),)].get("unique") is True
    assert (("name_lower", 1),) not in rooms  # private rooms' names are not unique
    assert messages[(("room_id", 1), ("seq", 1))].get("unique") is True
    assert messages[(("room_id", 1), ("user_id", 1), ("client_id", 1))].get("unique") is True


async def test_mongodb_upgrades_a_database_where_every_rooms_name_was_unique(mongo_url: str) -> None:
    # As an earlier version left it: a unique index on every room's lower-cased name, and no name_key.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        old = client.get_default_database()
        await old.rooms.create_index("name_lower", unique=True, name="name_lower_unique")
        made = {"creator_id": "u0", "creator_username": "founder", "created_at": utcnow(), "last_seq": 0}
        await old.rooms.insert_many(
            [
                {"_id": "r-public", "name": "Lobby", "name_lower": "lobby", "kind": "public", **made},
                {"_id": "r-private", "name": "Hideout", "name_lower": "hideout", "kind": "private", **made},
                {"_id": "r-direct", "name": "dm:a:b", "name_lower": "dm:a:b", "kind": "direct", **made},
                {"_id": "r-kindless", "name": "Old Times", "name_lower": "old times", **made},  # before kinds: public
            ]
        )
    finally:
        await client.close()

    first, second = open_storage(mongo_url), open_storage(mongo_url)
    try:
        await asyncio.gather(first.connect(), second.connect())  # two processes starting at once
        alice = await first.users.add("alice", b"hash")

        assert (await first.rooms.add("HIDEOUT", alice)).kind is RoomKind.PUBLIC
        hidden = await second.rooms.add("lobby", alice, RoomKind.PRIVATE)
        renamed = await first.rooms.update("r-private", name="Lobby")
        assert renamed is not None and renamed.kind is RoomKind.PRIVATE
        for taken in ("LOBBY", "old times", "dm:A:B"):
            with pytest.raises(Conflict):
                await second.rooms.add(taken, alice, RoomKind.DIRECT if taken.startswith("dm") else RoomKind.PUBLIC)
        direct, kindless = await first.rooms.get_by_name("DM:A:B"), await first.rooms.get_by_name("OLD TIMES")
        assert (direct and direct.id, kindless and kindless.id) == ("r-direct", "r-kindless")
        rooms = _index_keys(await first.db.rooms.index_information())
    finally:
        await first.close()
        await second.close()

    assert rooms[(("name_key", 1),)].get("unique") is True and (("name_lower", 1),) not in rooms
    async with connected_storage(mongo_url) as again:  # the next start finds nothing left to do
        assert {room.id for room in await again.rooms.named("lobby")} == {"r-public", "r-private", hidden.id}


async def test_mongodb_on_a_closed_port_raises_unavailable_quickly() -> None:
    store = open_storage(f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=500")
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable):
            await store.connect()
    finally:
        await store.close()

    assert time.monotonic() - started < 5


async def test_mongodb_ping_after_close_raises_unavailable(mongo_url: str) -> None:
    store = open_storage(mongo_url)
    await store.connect()
    await store.close()

    with pytest.raises(Unavailable):
        await store.ping()


async def test_sqlite_ping_after_close_raises_unavailable(sqlite_url: str) -> None:
    store = open_storage(sqlite_url)
    await store.connect()
    await store.close()

    with pytest.raises(Unavailable):
        await store.ping()


async def test_sqlite_reads_and_writes_after_close_raise_unavailable(sqlite_url: str) -> None:
    store = open_storage(sqlite_url)
    await store.connect()
    user = await store.users.add("alice", b"hash")
    await store.close()

    with pytest.raises(Unavailable):
        await store.users.get(user.id)
    with pytest.raises(Unavailable):
        await store.users.add("bob", b"hash")


async def test_a_batch_of_several_rooms_keeps_each_rooms_seqs_in_order(storage_url: str) -> None:
    async with connected_storage(storage_url) as storage:
        user = await storage.users.add("alice", b"hash")
        a, b = await storage.rooms.add("a", user), await storage.rooms.add("b", user)
        await storage.messages.add(new_message(b, user, "b-first"))

        results = await storage.messages.add_many(
            [new_message(a, user, "a1"), new_message(b, user, "b1"), new_message(a, user, "a2")]
        )

        assert [(m.room_id, m.client_id, m.seq) for m, _ in results] == [
            (a.id, "a1", 1),
            (b.id, "b1", 2),
            (a.id, "a2", 2),
        ]
        assert (await storage.messages.add(new_message(a, user, "a3")))[0].seq == 3
        assert (await storage.messages.add(new_message(b, user, "b2")))[0].seq == 3
        ghost = Room(
            id="0" * 24, name="ghost", creator_id=user.id, creator_username="alice", created_at=user.created_at
        )
        with pytest.raises(LookupError):
            await storage.messages.add_many([new_message(a, user, "a4"), new_message(ghost, user, "g1")])
        assert (await storage.messages.add(new_message(a, user, "a4")))[0].seq == 4  # nothing of that batch stayed


async def test_batches_of_several_rooms_from_two_processes_with_resends_leave_no_hole(storage_url: str) -> None:
    async with connected_storage(storage_url) as storage, connected_storage(storage_url) as other:
        user = await storage.users.add("alice", b"hash")
        a, b = await storage.rooms.add("a", user), await storage.rooms.add("b", user)
        original, _ = await storage.messages.add(new_message(a, user, "again", "the original"))

        batches = await asyncio.gather(
            *(
                (storage if i % 2 else other).messages.add_many(
                    [
                        new_message(a, user, f"a{i}"),
                        new_message(b, user, f"b{i}"),
                        new_message(a, user, "again", "a resend"),
                        new_message(b, user, f"b{i}-2"),
                    ]
                )
                for i in range(6)
            )
        )

        for batch in batches:
            assert [(m.client_id, created) for m, created in batch][2] == ("again", False)
            assert batch[2][0].seq == original.seq
            assert batch[1][0].seq < batch[3][0].seq  # each room's in the order given
        for room, count in ((a, 7), (b, 12)):
            stored, _ = await storage.messages.latest(room.id, 100)
            assert [m.seq for m in stored] == list(range(1, count + 1))
            assert len({m.client_id for m in stored}) == count
        # Not the counters: on FerretDB an update is a read then a write, and
        # two processes moving one counter at once may leave the lower seq
        # (MongoDB's updates are atomic; see MongoMessages._move_counters).


async def test_a_resend_first_in_a_batch_of_several_rooms_leaves_every_room_in_order(storage_url: str) -> None:
    async with connected_storage(storage_url) as storage:
        user = await storage.users.add("alice", b"hash")
        a, b, c = [await storage.rooms.add(name, user) for name in "abc"]
        await storage.messages.add(new_message(a, user, "a1"))
        await storage.messages.add(new_message(b, user, "b1"))

        results = await storage.messages.add_many(
            [
                new_message(a, user, "a1", "a resend"),
                new_message(b, user, "b1", "a resend"),
                new_message(a, user, "a2"),
                new_message(c, user, "c1"),
                new_message(b, user, "b2"),
                new_message(a, user, "a3"),
            ]
        )

        assert [(m.client_id, m.seq, created) for m, created in results] == [
            ("a1", 1, False),
            ("b1", 1, False),
            ("a2", 2, True),
            ("c1", 1, True),
            ("b2", 2, True),
            ("a3", 3, True),
        ]
        assert await storage.messages.acknowledged_seqs([a.id, b.id, c.id]) == {a.id: 3, b.id: 2, c.id: 1}


async def test_a_room_archived_or_deleted_by_another_process_is_refused_by_a_writer_that_just_wrote_there(
    storage_url: str,
) -> None:
    # A writer remembers the rooms it found open (MongoDB: until the rooms'
    # closing token moves); another process's archiving must still stop it.
    async with connected_storage(storage_url) as storage, connected_storage(storage_url) as other:
        user = await storage.users.add("alice", b"hash")
        a, b = await storage.rooms.add("a", user), await storage.rooms.add("b", user)
        await storage.messages.add_many([new_message(a, user, "a1"), new_message(b, user, "b1")])

        await other.rooms.set_archived(a.id, utcnow())
        with pytest.raises(RoomArchived):
            await storage.messages.add(new_message(a, user, "a2"))
        assert (await storage.messages.add(new_message(b, user, "b2")))[0].seq == 2

        await other.rooms.set_archived(a.id, None)
        assert (await storage.messages.add(new_message(a, user, "a2")))[0].seq == 2
        await other.rooms.delete(b.id)
        with pytest.raises(LookupError):
            await storage.messages.add(new_message(b, user, "b3"))


async def test_a_writer_that_remembers_a_room_steps_past_what_another_process_wrote_since(storage_url: str) -> None:
    async with connected_storage(storage_url) as storage, connected_storage(storage_url) as other:
        user = await storage.users.add("alice", b"hash")
        room = await storage.rooms.add("a", user)
        await storage.messages.add(new_message(room, user, "first"))
        for i in range(5):
            await other.messages.add(new_message(room, user, f"other{i}"))

        message, created = await storage.messages.add(new_message(room, user, "next"))

        assert (message.seq, created) == (7, True)
        stored, _ = await storage.messages.latest(room.id, 10)
        assert [m.seq for m in stored] == list(range(1, 8))


async def test_a_batch_touching_an_archived_room_is_refused_naming_it_and_storing_nothing(storage_url: str) -> None:
    async with connected_storage(storage_url) as storage:
        user = await storage.users.add("alice", b"hash")
        a, b = await storage.rooms.add("a", user), await storage.rooms.add("b", user)
        await storage.rooms.set_archived(b.id, utcnow())

        with pytest.raises(RoomArchived) as refused:
            await storage.messages.add_many([new_message(a, user, "a1"), new_message(b, user, "b1")])

        assert refused.value.room_ids == {b.id}
        assert await storage.messages.counters([a.id, b.id]) == {a.id: RoomCounters(), b.id: RoomCounters()}
        assert (await storage.messages.add(new_message(a, user, "a1")))[0].seq == 1
