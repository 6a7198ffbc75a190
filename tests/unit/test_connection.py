"""One socket's protocol, with a fake transport over real services and in-memory SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from chat.bootstrap import Services
from chat.errors import RateLimited, Unavailable
from chat.models import Message, NewMessage, Room, RoomCounters, User
from chat.services.conversation.messages import Messages
from chat.services.identity.accounts import Accounts, session_key
from chat.services.realtime.connection import INBOX_FRAMES, RoomConnection
from chat.services.realtime.fanout import Fanout
from chat.services.realtime.presence import Presence
from chat.services.realtime.sending import SEND_HOLD_GRACE_SECONDS
from chat.storage import Storage
from chat.wire.refusals import Close
from chat.wire.server import Outbound
from tests.support.clock import FakeClock
from tests.support.fakes import FakeTransport, listeners_in
from tests.support.handling import post, receive
from tests.support.waiting import eventually


class UnavailableMessages:
    """A message repository whose database has gone away."""

    async def add_many(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        raise Unavailable("database down")

    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        raise Unavailable("database down")

    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        raise Unavailable("database down")

    async def acknowledged_seqs(self, room_ids: Collection[str]) -> dict[str, int]:
        raise Unavailable("database down")

    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        raise Unavailable("database down")


def send(client_id: str, body: str = "hello") -> str:
    return json.dumps({"type": "send", "client_id": client_id, "body": body})


@pytest.fixture
def messages(services: Services) -> Messages:
    return services.messages


@pytest.fixture
def accounts(services: Services) -> Accounts:
    return services.accounts


@pytest.fixture
def fanout(services: Services) -> Fanout:
    return services.fanout


@pytest.fixture
def presence(services: Services) -> Presence:
    return services.presence


@pytest.fixture
async def member(accounts: Accounts) -> tuple[User, str]:
    user = await accounts.register("alice", "correct horse", "correct horse")
    return user, await accounts.start_session(user)


@pytest.fixture
async def chat_room(memory_storage: Storage, member: tuple[User, str]) -> Room:
    return await memory_storage.rooms.add("lobby", member[0])


Connect = Callable[..., Awaitable[tuple[RoomConnection, FakeTransport]]]


@pytest.fixture
async def connect(member: tuple[User, str], chat_room: Room, services: Services) -> AsyncIterator[Connect]:
    """Open connections the way the socket handler does: through the services' factory."""
    opened: list[RoomConnection] = []

    async def open_connection(since: int | None = None, rev: int | None = None) -> tuple[RoomConnection, FakeTransport]:
        user, token = member
        transport = FakeTransport()
        connection = services.connections.create(transport, user, chat_room, token)
        await connection.open(since, rev)
        opened.append(connection)
        return connection, transport

    yield open_connection
    for connection in opened:
        await connection.close()


async def test_open_sends_hello_then_history(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    user, _ = member
    await post(messages, user, chat_room, "earlier", "before you came")

    _, transport = await connect()

    assert transport.types == ["hello", "history", "presence"]
    hello, history, online = transport.sent
    assert hello["room"] == {"id": chat_room.id, "name": "lobby"}
    assert hello["user"] == {"id": user.id, "username": "alice"}
    assert hello["instance"] == "test:1"
    assert hello["last_seq"] == 1
    assert [m["body"] for m in history["messages"]] == ["before you came"]
    assert history["has_more"] is False
    assert online["users"] == [{"id": user.id, "username": "alice"}]


async def test_open_with_since_sends_only_later_messages(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    for i in range(3):
        await post(messages, member[0], chat_room, f"c{i}", f"m{i}")

    connection, transport = await connect(since=2)

    assert [m["seq"] for m in transport.of_type("history")[0]["messages"]] == [3]
    assert connection.last_seq == 3


async def test_sockets_joining_a_room_this_process_serves_get_history_without_reading_storage(
    connect: Connect,
    member: tuple[User, str],
    chat_room: Room,
    messages: Messages,
    memory_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A restart behind nginx sends thousands of sockets to the other
    # processes at once: each must not cost a history query.
    for i in range(60):
        await post(messages, member[0], chat_room, f"c{i}", f"m{i}")
    first, from_storage = await connect()
    await receive(first, send("live"))
    monkeypatch.setattr(memory_storage, "messages", UnavailableMessages())

    _, fresh = await connect()
    _, resumed = await connect(since=55)
    _, current = await connect(since=61)

    assert fresh.of_type("hello")[0]["last_seq"] == 61
    fresh_history = fresh.of_type("history")[0]
    assert [m["seq"] for m in fresh_history["messages"]] == list(range(12, 62))
    assert fresh_history["has_more"] is True
    assert fresh_history["messages"][:-1] == from_storage.of_type("history")[0]["messages"][1:]
    assert [m["seq"] for m in resumed.of_type("history")[0]["messages"]] == [56, 57, 58, 59, 60, 61]
    assert current.of_type("history")[0]["messages"] == []
    assert not fresh.of_type("error") and not resumed.of_type("error") and not current.of_type("error")


async def test_a_resume_older_than_what_the_process_remembers_reads_storage(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    for i in range(80):
        await post(messages, member[0], chat_room, f"c{i}", f"m{i}")
    await connect()

    _, transport = await connect(since=10)

    assert [m["seq"] for frame in transport.of_type("history") for m in frame["messages"]] == list(range(11, 81))


async def test_a_send_is_acked_then_delivered_once_via_the_fanout(
    connect: Connect, messages: Messages, chat_room: Room
) -> None:
    connection, transport = await connect()

    await receive(connection, send("c-1", "  hi there  "))

    await eventually(lambda: len(transport.of_type("message")) == 1)
    # Speaking in the (public) room joined it: the room is told of that too.
    assert [t for t in transport.types if t != "membership"] == ["hello", "history", "presence", "ack", "message"]
    (ack,), (delivered,) = transport.of_type("ack"), transport.of_type("message")
    assert ack["client_id"] == "c-1"
    assert ack["message"]["body"] == "hi there"
    assert ack["message"]["seq"] == 1
    assert delivered["message"] == ack["message"]
    stored, _ = await messages.recent(chat_room.id)
    assert [m.body for m in stored] == ["hi there"]


async def test_other_sockets_in_the_room_receive_the_message(connect: Connect) -> None:
    sender, _ = await connect()
    _, watcher_transport = await connect()

    await receive(sender, send("c-1", "for everyone"))

    await eventually(lambda: len(watcher_transport.of_type("message")) == 1)
    assert watcher_transport.of_type("message")[0]["message"]["body"] == "for everyone"
    assert watcher_transport.of_type("ack") == []


async def test_resending_a_client_id_acks_the_original_and_stores_nothing(
    connect: Connect, messages: Messages, chat_room: Room
) -> None:
    connection, transport = await connect()
    await receive(connection, send("c-1", "once"))
    await eventually(lambda: len(transport.of_type("message")) == 1)

    await receive(connection, send("c-1", "once"))

    acks = transport.of_type("ack")
    assert len(acks) == 2
    assert acks[1]["message"] == acks[0]["message"]
    stored, _ = await messages.recent(chat_room.id)
    assert len(stored) == 1
    await asyncio.sleep(0.05)  # room for a wrong second publish to arrive
    assert len(transport.of_type("message")) == 1


async def test_bad_json_is_a_bad_request_and_the_connection_keeps_working(connect: Connect) -> None:
    connection, transport = await connect()

    await receive(connection, "{not json")
    await receive(connection, send("c-2", "still here"))

    errors = transport.of_type("error")
    assert len(errors) == 1 and errors[0]["code"] == "bad_request"
    assert "client_id" not in errors[0]
    assert transport.of_type("ack")[0]["client_id"] == "c-2"
    assert transport.closed_with is None


async def test_an_empty_body_is_a_bad_request_carrying_the_client_id(connect: Connect) -> None:
    connection, transport = await connect()

    await receive(connection, send("c-1", "   "))

    assert transport.of_type("error") == [
        {"type": "error", "code": "bad_request", "message": "message body is empty", "client_id": "c-1"},
    ]


async def test_a_body_of_4001_characters_is_too_large(connect: Connect, messages: Messages, chat_room: Room) -> None:
    connection, transport = await connect()

    await receive(connection, send("c-big", "x" * 4001))

    error = transport.of_type("error")[0]
    assert error["code"] == "too_large"
    assert error["client_id"] == "c-big"
    assert await messages.recent(chat_room.id) == ([], False)


@pytest.mark.parametrize("chat_settings", [{"limit_sends": "2 per second"}], indirect=True)
async def test_exceeding_the_burst_is_rate_limited(connect: Connect, wall_clock: FakeClock) -> None:
    connection, transport = await connect()

    for i in range(3):
        await receive(connection, send(f"c-{i}"))

    assert len(transport.of_type("ack")) == 2
    error = transport.of_type("error")[0]
    assert error["code"] == "rate_limited"
    assert error["client_id"] == "c-2"

    wall_clock.advance(1.01)
    await receive(connection, send("c-2"))
    await receive(connection, send("c-3"))
    assert [ack["client_id"] for ack in transport.of_type("ack")] == ["c-0", "c-1", "c-2", "c-3"]


@pytest.mark.parametrize("chat_settings", [{"limit_sends": "2 per second"}], indirect=True)
async def test_sends_after_a_rate_limited_one_wait_for_it_so_order_is_kept(
    connect: Connect, wall_clock: FakeClock, messages: Messages, chat_room: Room
) -> None:
    connection, transport = await connect()
    for i in range(3):
        await receive(connection, send(f"c-{i}", f"m{i}"))

    # The limit has room again, but c-3 was sent after the refused c-2: it
    # would overtake it, so it is refused too, with the time left to wait.
    wall_clock.advance(1.01)
    await receive(connection, send("c-3", "m3"))
    held = transport.of_type("error")[-1]
    assert (held["code"], held["client_id"]) == ("rate_limited", "c-3")
    assert held["retry_after"] >= 0

    for i in (2, 3):
        await receive(connection, send(f"c-{i}", f"m{i}"))
    stored, _ = await messages.recent(chat_room.id)
    assert [m.body for m in stored] == ["m0", "m1", "m2", "m3"]


@pytest.mark.parametrize("chat_settings", [{"limit_sends": "1 per second"}], indirect=True)
async def test_a_refused_send_never_resent_stops_holding_the_others_back(
    connect: Connect, wall_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, transport = await connect()
    now = [1000.0]
    monkeypatch.setattr(connection._hub, "clock", lambda: now[0])
    await receive(connection, send("c-1"))
    await receive(connection, send("c-2"))  # refused; this client never sends it again

    now[0] += 1 + SEND_HOLD_GRACE_SECONDS + 0.1
    wall_clock.advance(1 + SEND_HOLD_GRACE_SECONDS + 0.1)
    await receive(connection, send("c-3"))
    assert [ack["client_id"] for ack in transport.of_type("ack")] == ["c-1", "c-3"]


@pytest.mark.parametrize("chat_settings", [{"limit_sends": "1 per second"}], indirect=True)
async def test_a_rate_limited_send_says_when_to_retry_and_retrying_then_succeeds(
    connect: Connect, wall_clock: FakeClock
) -> None:
    connection, transport = await connect()
    await receive(connection, send("c-1"))

    await receive(connection, send("c-2"))
    error = transport.of_type("error")[0]
    assert (error["code"], error["client_id"]) == ("rate_limited", "c-2")
    assert 0.95 <= error["retry_after"] <= 1.05

    wall_clock.advance(error["retry_after"])
    await receive(connection, send("c-2"))
    assert [ack["client_id"] for ack in transport.of_type("ack")] == ["c-1", "c-2"]


@pytest.mark.parametrize("chat_settings", [{"session_recheck_seconds": 0}], indirect=True)
async def test_a_send_after_the_session_ended_is_forbidden_and_closes(
    connect: Connect, memory_storage: Storage, member: tuple[User, str], messages: Messages, chat_room: Room
) -> None:
    connection, transport = await connect()
    await receive(connection, send("c-1"))
    assert len(transport.of_type("ack")) == 1

    # Ended without an announcement reaching this process (e.g. the broker
    # was down): the re-check before a send catches it.
    await memory_storage.sessions.delete(session_key(member[1]))
    await receive(connection, send("c-2"))

    error = transport.of_type("error")[0]
    assert error["code"] == "forbidden"
    assert error["client_id"] == "c-2"
    assert transport.closed_with is not None and transport.closed_with[0] == Close.SESSION_ENDED == 1008
    stored, _ = await messages.recent(chat_room.id)
    assert [m.client_id for m in stored] == ["c-1"]


async def test_an_unavailable_store_gives_an_unavailable_error(
    connect: Connect, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, transport = await connect()
    monkeypatch.setattr(memory_storage, "messages", UnavailableMessages())

    await receive(connection, send("c-1"))
    # Ahead of what the feed delivered: only storage can say (a sync it can
    # answer from memory needs no storage at all).
    await receive(connection, json.dumps({"type": "sync", "since": 5}))

    errors = transport.of_type("error")
    assert [e["code"] for e in errors] == ["unavailable", "unavailable"]
    assert errors[0]["client_id"] == "c-1"
    assert transport.of_type("ack") == []
    assert transport.closed_with is None


async def test_sync_resends_history_after_since(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    connection, transport = await connect()
    for i in range(3):
        await post(messages, member[0], chat_room, f"other-{i}", f"m{i}")

    await receive(connection, json.dumps({"type": "sync", "since": 1}))

    history = transport.of_type("history")[-1]
    assert [m["seq"] for m in history["messages"]] == [2, 3]
    assert connection.last_seq == 3


async def test_frames_already_in_history_are_not_delivered_again(connect: Connect) -> None:
    connection, transport = await connect()
    await receive(connection, send("c-1"))
    await eventually(lambda: len(transport.of_type("message")) == 1)

    await receive(connection, json.dumps({"type": "sync", "since": 0}))
    # A late broker copy of seq 1 (e.g. from another process) is a duplicate now.
    connection.deliver(1, Outbound(json.dumps(transport.of_type("message")[0])))

    assert len(transport.of_type("message")) == 1


async def test_a_frame_given_up_while_it_waited_for_room_leaves_no_worker_behind_at_close(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tornado may cancel a handler's on_message while it waits for room in
    # the inbox. That frame was never queued: it must not keep the
    # connection "busy", or close() left the worker waiting for a frame
    # forever (collected later as a task destroyed while pending) and a
    # shutdown waited out its grace for it.
    connection, _ = await connect()
    gate = asyncio.Event()

    async def slow_receive(text: str | bytes) -> None:
        await gate.wait()

    monkeypatch.setattr(connection, "_receive", slow_receive)
    submits = [asyncio.create_task(connection.submit("{}")) for _ in range(INBOX_FRAMES + 2)]
    await asyncio.sleep(0.01)  # one frame being handled, the inbox full, one submit waiting for room
    waiting = submits[-1]
    assert not waiting.done()
    waiting.cancel()
    gate.set()
    await asyncio.gather(*submits[:-1])
    await asyncio.wait_for(connection.wait_idle(), 1)  # every queued frame handled; the given-up one never counted

    await connection.close()
    worker = connection._worker
    assert worker is not None
    await asyncio.wait_for(asyncio.gather(worker, return_exceptions=True), 1)


async def test_a_closed_connection_receives_nothing_more(connect: Connect, fanout: Fanout, chat_room: Room) -> None:
    sender, sender_transport = await connect()
    leaver, leaver_transport = await connect()

    await leaver.close()
    await receive(sender, send("c-1"))

    await eventually(lambda: len(sender_transport.of_type("message")) == 1)
    assert listeners_in(fanout, chat_room.id) == 1
    assert leaver_transport.of_type("message") == []


async def test_a_socket_that_closes_while_opening_leaves_no_listener_or_presence_behind(
    member: tuple[User, str],
    chat_room: Room,
    services: Services,
    fanout: Fanout,
    presence: Presence,
) -> None:
    user, token = member
    connection = services.connections.create(FakeTransport(), user, chat_room, token)
    opening = asyncio.create_task(connection.open(None))
    await asyncio.sleep(0)  # open() is now waiting on storage
    await connection.close()  # what the handler's on_close does
    await opening

    assert listeners_in(fanout, chat_room.id) == 0
    assert await presence.online(chat_room.id) == []


async def test_the_factory_knows_every_open_connection_and_closing_forgets_it(
    connect: Connect, services: Services
) -> None:
    first, _ = await connect()
    second, _ = await connect()
    assert set(services.connections) == {first, second}

    await first.close()

    assert set(services.connections) == {second}


async def test_closing_all_connections_closes_every_transport_with_the_code_given(
    connect: Connect, services: Services
) -> None:
    _, first = await connect()
    _, second = await connect()

    finished = await services.connections.close_all(Close.GOING_AWAY, "server shutting down; reconnect", grace=1)

    assert finished
    assert first.closed_with == second.closed_with == (1001, "server shutting down; reconnect")


async def test_signing_out_closes_the_sessions_open_sockets_at_once(
    connect: Connect, accounts: Accounts, member: tuple[User, str]
) -> None:
    _, first = await connect()
    _, second = await connect()

    await accounts.end_session(member[1])

    for transport in (first, second):
        assert transport.of_type("error")[-1]["code"] == "forbidden"
        assert transport.closed_with is not None and transport.closed_with[0] == Close.SESSION_ENDED


async def test_the_periodic_recheck_closes_sockets_whose_sessions_expired(
    connect: Connect, services: Services, memory_storage: Storage, member: tuple[User, str]
) -> None:
    _, transport = await connect()
    assert await services.revocations.recheck() == 0

    await memory_storage.sessions.delete(session_key(member[1]))  # expired, idled out, or ended unannounced

    assert await services.revocations.recheck() == 1
    assert transport.closed_with is not None and transport.closed_with[0] == Close.SESSION_ENDED


# -- abuse limits and bounded resume -------------------------------------------------


@pytest.mark.parametrize("chat_settings", [{"resume_max_messages": 3}], indirect=True)
async def test_a_resume_from_too_far_back_tells_the_client_to_reload_instead(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    for i in range(5):
        await post(messages, member[0], chat_room, f"c{i}", f"m{i}")

    far, far_transport = await connect(since=1)  # 4 missed: more than 3
    _, near_transport = await connect(since=2)  # 3 missed: sent

    assert far_transport.of_type("history") == [{"type": "history", "messages": [], "has_more": False, "reset": True}]
    assert far.last_seq == 5
    assert [m["seq"] for m in near_transport.of_type("history")[0]["messages"]] == [3, 4, 5]


@pytest.mark.parametrize("chat_settings", [{"history_frame_max_bytes": 16 * 1024}], indirect=True)
async def test_history_frames_stay_under_the_byte_cap(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    for i in range(12):
        await post(messages, member[0], chat_room, f"c{i}", f"{i} " + "x" * 3990)

    _, transport = await connect(since=0)

    frames = transport.of_type("history")
    assert len(frames) > 1 and all(len(json.dumps(f)) <= 16 * 1024 for f in frames)
    assert [f["has_more"] for f in frames] == [True] * (len(frames) - 1) + [False]
    assert [m["seq"] for f in frames for m in f["messages"]] == list(range(1, 13))


@pytest.mark.parametrize(
    "chat_settings", [{"limit_syncs_per_socket": "2 per minute", "limit_syncs_per_user": "3 per minute"}], indirect=True
)
async def test_syncs_are_limited_per_socket_and_per_user(connect: Connect) -> None:
    first, first_transport = await connect()
    second, second_transport = await connect()
    sync = json.dumps({"type": "sync", "since": 0})

    for _ in range(3):
        await receive(first, sync)
    await receive(second, sync)
    await receive(second, sync)

    assert [e["code"] for e in first_transport.of_type("error")] == ["rate_limited"]  # its third
    assert [e["code"] for e in second_transport.of_type("error")] == ["rate_limited"]  # the user's fourth
    assert all(e["retry_after"] > 0 for e in first_transport.of_type("error") + second_transport.of_type("error"))


@pytest.mark.parametrize("chat_settings", [{"max_sockets_per_user": 2, "max_sockets_per_ip": 3}], indirect=True)
async def test_sockets_are_admitted_up_to_the_limits_per_user_and_per_address(
    services: Services, member: tuple[User, str], accounts: Accounts
) -> None:
    alice = member[0]
    bob = await accounts.register("bob", "correct horse", "correct horse")
    first = await services.admissions.admit(alice, "192.0.2.1")
    await services.admissions.admit(alice, "192.0.2.1")

    with pytest.raises(RateLimited):
        await services.admissions.admit(alice, "192.0.2.2")  # a third for alice
    await services.admissions.admit(bob, "192.0.2.1")  # the address's third
    with pytest.raises(RateLimited):
        await services.admissions.admit(bob, "192.0.2.1")  # its fourth

    await services.admissions.release(first)
    await services.admissions.admit(alice, "192.0.2.9")


@pytest.mark.parametrize("chat_settings", [{"max_sockets_per_user": 10, "max_sockets_per_ip": 3}], indirect=True)
async def test_sockets_from_one_ipv6_network_share_the_per_address_limit(
    services: Services, member: tuple[User, str]
) -> None:
    for host in range(3):
        await services.admissions.admit(member[0], f"2001:db8:5:1::{host + 1:x}")

    with pytest.raises(RateLimited):
        await services.admissions.admit(member[0], "2001:db8:5:1:ffff::9")  # the same /64
    await services.admissions.admit(member[0], "2001:db8:5:2::1")  # another network


async def test_a_resume_from_beyond_the_stored_history_tells_the_client_to_reload(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    await post(messages, member[0], chat_room, "c1", "only one")

    # The client holds seq 9: history was restored from an older backup since.
    _, transport = await connect(since=9)

    assert transport.of_type("history") == [{"type": "history", "messages": [], "has_more": False, "reset": True}]


# -- the inbox: reading the socket never waits for storage ---------------------------


async def test_frames_are_queued_at_once_and_handled_in_order_by_their_own_worker(
    connect: Connect, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, transport = await connect()
    release = asyncio.Event()
    original = memory_storage.messages.add_many

    async def slow_add(news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        await release.wait()  # the database is slow today
        return await original(news)

    monkeypatch.setattr(memory_storage.messages, "add_many", slow_add)
    for i in range(3):
        # Returns at once: the handler goes back to reading the socket (pongs included).
        await asyncio.wait_for(connection.submit(send(f"c-{i}", f"m{i}")), 0.1)
    idle = asyncio.create_task(connection.wait_idle())
    await asyncio.sleep(0.01)
    assert transport.of_type("ack") == [] and not idle.done()

    release.set()
    await asyncio.wait_for(idle, 2)
    assert [a["client_id"] for a in transport.of_type("ack")] == ["c-0", "c-1", "c-2"]
    assert [a["message"]["seq"] for a in transport.of_type("ack")] == [1, 2, 3]


@dataclass
class SlowStorage:
    """Storage that takes sends and holds them until ``release`` is set; ``handed`` once it holds one."""

    release: asyncio.Event
    handed: asyncio.Event


@pytest.fixture
def slow_storage(memory_storage: Storage, monkeypatch: pytest.MonkeyPatch) -> SlowStorage:
    slow = SlowStorage(asyncio.Event(), asyncio.Event())
    original = memory_storage.messages.add_many

    async def slow_add(news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        slow.handed.set()
        await slow.release.wait()
        return await original(news)

    monkeypatch.setattr(memory_storage.messages, "add_many", slow_add)
    return slow


async def test_a_socket_closed_while_its_send_is_being_stored_leaves_no_worker_waiting_for_frames(
    connect: Connect, memory_storage: Storage, slow_storage: SlowStorage
) -> None:
    # The send keeps the connection busy until it is stored, while its worker
    # already waits for the next frame. Closing then left that worker waiting
    # for good: the connection, forgotten, was collected with it pending
    # ("Task was destroyed but it is pending!", seen in the fuzz tests).
    connection, _ = await connect()
    await connection.submit(send("c-1"))
    await asyncio.wait_for(slow_storage.handed.wait(), 1)

    await connection.close()
    worker = connection._worker
    assert worker is not None
    await asyncio.wait_for(asyncio.gather(worker, return_exceptions=True), 1)
    slow_storage.release.set()
    await asyncio.wait_for(connection.wait_idle(), 2)  # the send itself still finishes
    stored, _ = await memory_storage.messages.latest(connection.room.id, 5)
    assert [m.client_id for m in stored] == ["c-1"]


async def test_closing_drops_the_frames_not_yet_handed_to_storage_and_lets_the_others_finish(
    connect: Connect,
    slow_storage: SlowStorage,
    monkeypatch: pytest.MonkeyPatch,
    messages: Messages,
    chat_room: Room,
) -> None:
    connection, _ = await connect()
    monkeypatch.setattr(connection, "_sends_in_flight", asyncio.Semaphore(1))
    await connection.submit(send("in-hand"))  # handed to storage
    await connection.submit(send("waiting"))  # waiting for a place in flight
    await connection.submit(send("queued"))  # still in the inbox
    await asyncio.wait_for(slow_storage.handed.wait(), 2)

    await connection.close()
    slow_storage.release.set()
    await asyncio.wait_for(connection.wait_idle(), 2)

    stored, _ = await messages.recent(chat_room.id)
    assert [m.client_id for m in stored] == ["in-hand"]  # the client re-sends "queued"


async def test_a_send_whose_socket_closes_while_it_renders_is_stored_all_the_same(
    connect: Connect, monkeypatch: pytest.MonkeyPatch, messages: Messages, chat_room: Room
) -> None:
    # A Markdown body renders in a worker process; a person who sends it and
    # goes to another page at once must still find it in the room.
    connection, _ = await connect()
    rendering, release = asyncio.Event(), asyncio.Event()
    prepare = messages.prepare

    async def slow_prepare(*args: Any) -> NewMessage:
        rendering.set()
        await release.wait()
        return await prepare(*args)

    monkeypatch.setattr(messages, "prepare", slow_prepare)
    await connection.submit(send("rendering", "**bold** and gone"))
    await asyncio.wait_for(rendering.wait(), 2)

    await connection.close()
    release.set()
    await asyncio.wait_for(connection.wait_idle(), 2)

    stored, _ = await messages.recent(chat_room.id)
    assert [m.client_id for m in stored] == ["rendering"]


async def test_a_clients_sends_do_not_wait_for_each_others_acks_and_keep_their_order(
    connect: Connect, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, transport = await connect()
    release = asyncio.Event()
    writes: list[list[str]] = []
    original = memory_storage.messages.add_many

    async def slow_add(news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        writes.append([n.client_id for n in news])
        await release.wait()
        return await original(news)

    monkeypatch.setattr(memory_storage.messages, "add_many", slow_add)
    for i in range(5):
        await connection.submit(send(f"c-{i}"))
    await asyncio.sleep(0.05)
    # All five reached storage before the first write finished: at most two writes in all.
    handed_over = sum(len(write) for write in writes)

    release.set()
    await asyncio.wait_for(connection.wait_idle(), 2)
    assert [c for write in writes for c in write] == [f"c-{i}" for i in range(5)] and len(writes) <= 2
    assert handed_over in (1, 5)  # the first alone, the rest queued behind it; or all five at once
    acks = transport.of_type("ack")
    assert [(a["client_id"], a["message"]["seq"]) for a in acks] == [(f"c-{i}", i + 1) for i in range(5)]


async def test_typing_reaches_the_others_in_the_room_and_never_the_typists_own_sockets(
    connect: Connect, accounts: Accounts, chat_room: Room, services: Services
) -> None:
    alice_here, alice_own = await connect()
    _, alice_other_tab = await connect()
    bob = await accounts.register("bob", "correct horse", "correct horse")
    bob_transport = FakeTransport()
    bob_connection = services.connections.create(bob_transport, bob, chat_room, await accounts.start_session(bob))
    await bob_connection.open(None)

    await receive(alice_here, json.dumps({"type": "typing"}))

    await eventually(lambda: bool(bob_transport.of_type("typing")), what="bob told alice is typing")
    assert bob_transport.of_type("typing") == [{"type": "typing", "user": alice_here.user.public()}]
    await asyncio.sleep(0.05)
    assert alice_own.of_type("typing") == alice_other_tab.of_type("typing") == []
    await bob_connection.close()


async def test_typing_notices_over_their_limit_are_dropped_unanswered_and_stored_nowhere(
    connect: Connect, messages: Messages, chat_room: Room
) -> None:
    connection, transport = await connect()
    for i in range(12):
        await receive(connection, json.dumps({"type": "typing", "client_id": f"t{i}"}))

    # 10 per 30 s by default; the rest are dropped unanswered: an error would
    # read to the person as a failed message.
    assert transport.of_type("error") == []
    stored, _ = await messages.recent(chat_room.id)
    assert stored == []


# -- edit and delete ---------------------------------------------------------------


def edit(message_id: str, body: str, client_id: str = "e-1") -> str:
    return json.dumps({"type": "edit", "id": message_id, "body": body, "client_id": client_id})


def delete(message_id: str, client_id: str = "d-1") -> str:
    return json.dumps({"type": "delete", "id": message_id, "client_id": client_id})


async def test_the_author_edits_and_deletes_and_the_room_is_told(
    connect: Connect, accounts: Accounts, chat_room: Room, services: Services, messages: Messages
) -> None:
    alice, alice_transport = await connect()
    bob = await accounts.register("bob", "correct horse", "correct horse")
    bob_transport = FakeTransport()
    bob_connection = services.connections.create(bob_transport, bob, chat_room, await accounts.start_session(bob))
    await bob_connection.open(None)
    await receive(alice, send("c-1", "helo"))
    original = alice_transport.of_type("ack")[0]["message"]

    await receive(alice, edit(original["id"], "hello"))
    await receive(alice, delete(original["id"]))

    def updates(transport: FakeTransport) -> list[dict[str, Any]]:
        return [frame["message"] for frame in transport.of_type("message_updated")]

    await eventually(lambda: len(updates(bob_transport)) == 2, what="bob told of the edit and the deletion")
    edited, deleted = updates(bob_transport)
    assert (edited["body"], edited["rev"], edited["seq"]) == ("hello", 1, original["seq"])
    assert edited["edited_at"] is not None and edited["deleted_at"] is None
    assert (deleted["body"], deleted["rev"]) == ("", 2) and deleted["deleted_at"] is not None
    await eventually(lambda: len(updates(alice_transport)) == 2, what="the author's own socket told too")
    stored, _ = await messages.recent(chat_room.id)
    assert [(m.seq, m.body, m.rev) for m in stored] == [(1, "", 2)]
    await bob_connection.close()


async def test_someone_elses_message_cannot_be_edited_or_deleted(
    connect: Connect, accounts: Accounts, chat_room: Room, services: Services, messages: Messages
) -> None:
    alice, alice_transport = await connect()
    await receive(alice, send("c-1", "mine"))
    message_id = alice_transport.of_type("ack")[0]["message"]["id"]
    mallory = await accounts.register("mallory", "correct horse", "correct horse")
    transport = FakeTransport()
    connection = services.connections.create(transport, mallory, chat_room, await accounts.start_session(mallory))
    await connection.open(None)

    await receive(connection, edit(message_id, "defaced", "e-9"))
    await receive(connection, delete(message_id, "d-9"))
    await receive(connection, edit("0" * 24, "nothing there", "e-10"))

    codes = [(e["code"], e["client_id"]) for e in transport.of_type("error")]
    assert codes == [("forbidden", "e-9"), ("forbidden", "d-9"), ("bad_request", "e-10")]
    assert transport.closed_with is None  # refused, not thrown out
    stored, _ = await messages.recent(chat_room.id)
    assert [(m.body, m.rev) for m in stored] == [("mine", 0)]
    await asyncio.sleep(0.05)
    assert transport.of_type("message_updated") == alice_transport.of_type("message_updated") == []
    await connection.close()


async def test_a_resume_with_rev_is_sent_the_edits_it_missed(
    connect: Connect, member: tuple[User, str], chat_room: Room, messages: Messages
) -> None:
    user, _ = member
    for i in range(3):
        await post(messages, user, chat_room, f"c-{i}", f"m{i}")
    stored, _ = await messages.recent(chat_room.id)
    await messages.edit(user, chat_room, stored[0].id, "m0 fixed")
    rev_seen = await messages.stored_rev(chat_room.id)
    # What happened while this client was away: one more edit, and a deletion.
    await messages.edit(user, chat_room, stored[2].id, "m2 fixed")
    await messages.delete(user, chat_room, stored[1].id)

    _, transport = await connect(3, rev_seen)

    assert transport.types[:3] == ["hello", "history", "updates"]
    frame = transport.of_type("updates")[0]
    assert [(m["seq"], m["body"], m["rev"]) for m in frame["messages"]] == [(3, "m2 fixed", 2), (2, "", 3)]
    assert frame["last_rev"] == 3
