"""Sockets and event streams cut off when their session or their room is lost (second review, findings 1, 2).

Real services over in-memory SQLite and the memory broker; the transports are
fakes that record what they were sent and how they were closed.
"""

from __future__ import annotations

import json

import pytest

from chat.bootstrap import Services
from chat.errors import Unavailable
from chat.models import Room, RoomKind, User
from chat.services.identity.accounts import session_key
from chat.services.realtime.connection import RoomConnection
from chat.services.realtime.userstream import UserStream
from chat.storage import Storage
from chat.wire.refusals import Close
from chat.wire.server import Outbound
from tests.support.fakes import FakeTransport
from tests.support.handling import post, receive


@pytest.fixture
async def alice(services: Services) -> tuple[User, str]:
    user = await services.accounts.register("alice", "correct horse", "correct horse")
    return user, await services.accounts.start_session(user)


@pytest.fixture
async def bob(services: Services) -> tuple[User, str]:
    user = await services.accounts.register("bob_b", "correct horse", "correct horse")
    return user, await services.accounts.start_session(user)


@pytest.fixture
async def private_room(services: Services, alice: tuple[User, str], bob: tuple[User, str]) -> Room:
    """alice's private room, with bob invited."""
    room = await services.rooms.create("secret", alice[0], RoomKind.PRIVATE)
    await services.memberships.invite(alice[0], room, "bob_b")
    return room


async def open_socket(services: Services, who: tuple[User, str], room: Room) -> tuple[RoomConnection, FakeTransport]:
    transport = FakeTransport()
    connection = services.connections.create(transport, who[0], room, who[1])
    await connection.open(None)
    return connection, transport


async def open_stream(services: Services, who: tuple[User, str]) -> tuple[UserStream, FakeTransport]:
    transport = FakeTransport()
    stream = services.user_streams.create(transport, who[0], who[1])
    await stream.open()
    return stream, transport


def ended(transport: FakeTransport) -> bool:
    return transport.closed_with is not None and transport.closed_with[0] == Close.SESSION_ENDED


def removed(transport: FakeTransport) -> bool:
    return transport.closed_with is not None and transport.closed_with[0] == Close.REMOVED


def broker_down(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(channel: str, payload: str) -> None:
        raise Unavailable("redis down")

    monkeypatch.setattr(services.broker, "publish", refuse)


# -- finding 1: the event stream belongs to its session ---------------------------------


async def test_signing_out_closes_the_sessions_event_stream_at_once(
    services: Services, alice: tuple[User, str]
) -> None:
    stream, transport = await open_stream(services, alice)
    other_session = await services.accounts.start_session(alice[0])
    _, kept = await open_stream(services, (alice[0], other_session))

    await services.accounts.end_session(alice[1])

    assert ended(transport)
    assert transport.of_type("error")[-1]["code"] == "forbidden"
    assert not ended(kept)
    sent = len(transport.sent)
    stream.activity("any-room", 7, Outbound('{"type":"message","message":{"user_id":"x","html":""}}'))
    stream.heard(json.dumps({"type": "read", "room_id": "any-room", "read_seq": 7, "mentions": 0}))
    assert len(transport.sent) == sent  # nothing more while the socket closes


@pytest.mark.parametrize("how", ["sign-out-others", "password", "disable"])
async def test_every_way_a_session_ends_closes_its_event_stream(
    services: Services, alice: tuple[User, str], how: str
) -> None:
    _, transport = await open_stream(services, alice)
    keeper = await services.accounts.start_session(alice[0])
    if how == "sign-out-others":
        await services.accounts.end_other_sessions(alice[0], keeper)
    elif how == "password":
        await services.accounts.change_password(
            alice[0], "correct horse", "a new horse", "a new horse", keep_token=keeper
        )
    else:
        await services.accounts.disable(alice[0].id)
    assert ended(transport)


async def test_the_periodic_recheck_closes_event_streams_whose_sessions_ended_unannounced(
    services: Services, memory_storage: Storage, alice: tuple[User, str]
) -> None:
    _, transport = await open_stream(services, alice)
    assert await services.revocations.recheck() == 0

    await memory_storage.sessions.delete(session_key(alice[1]))  # expired, idled out, or ended unannounced

    assert await services.revocations.recheck() == 1
    assert ended(transport)


async def test_a_stream_whose_session_ended_never_reads_the_persons_rooms_again(
    services: Services,
    memory_storage: Storage,
    alice: tuple[User, str],
    bob: tuple[User, str],
) -> None:
    stream, transport = await open_stream(services, bob)
    await memory_storage.sessions.delete(session_key(bob[1]))  # signed out, the announcement lost
    room = await services.rooms.create("a new secret", alice[0], RoomKind.PRIVATE)
    await services.memberships.invite(alice[0], room, "bob_b")

    await stream.sync(check_session=True)  # what the invitation's "rooms changed" makes it do

    assert "a new secret" not in json.dumps(transport.sent)
    assert ended(transport)


# -- finding 2: a removal takes effect everywhere, announced or not ---------------------


async def test_a_removal_while_the_broker_is_down_closes_the_members_sockets_here_and_answers(
    services: Services,
    alice: tuple[User, str],
    bob: tuple[User, str],
    private_room: Room,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, transport = await open_socket(services, bob, private_room)
    broker_down(services, monkeypatch)

    await services.memberships.remove(alice[0], private_room, bob[0].id)  # no Unavailable: the removal is done

    assert removed(transport)


async def test_removing_someone_already_removed_announces_it_again(
    services: Services,
    alice: tuple[User, str],
    bob: tuple[User, str],
    private_room: Room,
    memory_storage: Storage,
) -> None:
    _, transport = await open_socket(services, bob, private_room)
    await memory_storage.memberships.remove(private_room.id, bob[0].id)  # removed, its announcement lost

    await services.memberships.remove(alice[0], private_room, bob[0].id)

    assert removed(transport)


async def test_the_periodic_recheck_closes_sockets_of_people_removed_or_banned_unannounced(
    services: Services,
    alice: tuple[User, str],
    bob: tuple[User, str],
    private_room: Room,
    memory_storage: Storage,
) -> None:
    public_room = await services.rooms.create("open", alice[0])
    _, in_private = await open_socket(services, bob, private_room)
    _, in_public = await open_socket(services, bob, public_room)
    _, owner = await open_socket(services, alice, private_room)
    assert await services.revocations.recheck() == 0

    await memory_storage.memberships.remove(private_room.id, bob[0].id)
    await memory_storage.bans.add(public_room.id, bob[0].id, alice[0].id)

    assert await services.revocations.recheck() == 2
    assert removed(in_private) and removed(in_public)
    assert owner.closed_with is None


async def test_a_history_read_after_an_unannounced_removal_closes_instead_of_answering(
    services: Services,
    alice: tuple[User, str],
    bob: tuple[User, str],
    private_room: Room,
    memory_storage: Storage,
) -> None:
    await post(services.messages, alice[0], private_room, "c1", "before")
    connection, transport = await open_socket(services, bob, private_room)
    await memory_storage.memberships.remove(private_room.id, bob[0].id)
    await post(services.messages, alice[0], private_room, "c2", "after the removal")
    sent = len(transport.sent)

    await receive(connection, json.dumps({"type": "fetch", "before": 3, "client_id": "f1"}))
    await receive(connection, json.dumps({"type": "sync", "since": 0}))

    assert removed(transport)
    assert "after the removal" not in json.dumps(transport.sent[sent:])
    assert not {"history", "older"} & {frame["type"] for frame in transport.sent[sent:]}


@pytest.mark.parametrize("chat_settings", [{"session_recheck_seconds": 0}], indirect=True)
async def test_a_send_after_an_unannounced_removal_is_not_stored(
    services: Services,
    bob: tuple[User, str],
    private_room: Room,
    memory_storage: Storage,
) -> None:
    connection, transport = await open_socket(services, bob, private_room)
    await memory_storage.memberships.remove(private_room.id, bob[0].id)

    await receive(connection, json.dumps({"type": "send", "client_id": "s1", "body": "still here?"}))

    assert removed(transport)
    assert await services.messages.stored_seq(private_room.id) == 0


async def test_the_recheck_stops_an_event_stream_following_a_room_it_was_removed_from(
    services: Services,
    alice: tuple[User, str],
    bob: tuple[User, str],
    private_room: Room,
    memory_storage: Storage,
) -> None:
    stream, transport = await open_stream(services, bob)
    assert private_room.id in stream.rooms()
    await memory_storage.memberships.remove(private_room.id, bob[0].id)

    assert await services.user_streams.recheck_access() == 1
    await stream._syncing  # type: ignore[misc]  # the refresh it started

    assert private_room.id not in stream.rooms()
    assert [badge["room_id"] for badge in transport.of_type("badges")[-1]["rooms"]] == []
    assert transport.closed_with is None
