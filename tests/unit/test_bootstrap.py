"""The composition root builds every service from settings and wires them to each other."""

from __future__ import annotations

import asyncio
import concurrent.futures

from chat.bootstrap import build_services
from chat.broker import open_backplane
from chat.broker.memory import MemoryBroker
from chat.config import Settings
from chat.models import OnlineUser
from chat.storage import Storage
from chat.storage.sqlite.storage import SQLiteStorage
from chat.wire.events import PRESENCE_CHANGED, control_event
from tests.support.fakes import FakeTransport
from tests.support.waiting import eventually


def test_backends_come_from_the_urls_in_settings(chat_settings: Settings) -> None:
    services = build_services(chat_settings)
    try:
        assert isinstance(services.storage, SQLiteStorage)
        assert services.storage.path == "data/chat.sqlite3"
        assert isinstance(services.broker, MemoryBroker)
        assert services.connections.policy.instance == "test:1"
    finally:
        services.executor.shutdown()


def test_overrides_replace_the_parts_they_name(chat_settings: Settings, memory_storage: Storage) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    services = build_services(chat_settings, storage=memory_storage, executor=executor)

    assert services.storage is memory_storage
    assert services.executor is executor
    assert services.messages.history_limit == chat_settings.history_limit
    executor.shutdown()


async def test_presence_hears_other_processes_through_the_fanout(
    chat_settings: Settings, memory_storage: Storage
) -> None:
    backplane = open_backplane("memory://")
    services = build_services(chat_settings, storage=memory_storage, backplane=backplane)
    await services.start()
    try:
        user = await services.storage.users.add("alice", b"hash")
        room = await services.storage.rooms.add("lobby", user)
        transport = FakeTransport()
        connection = services.connections.create(transport, user, room, "token")
        await connection.open(None)
        assert transport.of_type("presence")[-1]["users"] == [{"id": user.id, "username": "alice"}]

        # Another process puts bob in the shared store and announces it on the room's channel.
        await backplane.presence.add(room.id, "other:2", OnlineUser(username="bob", id="b1"), ttl=30)
        await services.fanout.publish_control(room.id, control_event(PRESENCE_CHANGED))

        await eventually(lambda: len(transport.of_type("presence")) == 2, what="a presence frame")
        assert [u["username"] for u in transport.of_type("presence")[-1]["users"]] == ["alice", "bob"]
        # A control event is for the services, never for the sockets.
        assert PRESENCE_CHANGED not in transport.types
    finally:
        await services.close()


async def test_a_join_storm_sends_the_sockets_already_there_a_few_lists_not_one_per_joiner(
    chat_settings: Settings, memory_storage: Storage
) -> None:
    services = build_services(chat_settings, storage=memory_storage)
    await services.start()
    try:
        users = [await services.storage.users.add(f"user{i:02}", b"hash") for i in range(40)]
        room = await services.storage.rooms.add("lobby", users[0])
        store = services.presence._store
        reads = 0
        read_online = store.online

        async def counting_online(room_id: str) -> list[OnlineUser]:
            nonlocal reads
            reads += 1
            return await read_online(room_id)

        store.online = counting_online  # type: ignore[method-assign]
        first = FakeTransport()
        await services.connections.create(first, users[0], room, "token").open(None)

        joiners = [FakeTransport() for _ in users[1:]]
        await asyncio.gather(  # 39 people join at once (a restart behind nginx)
            *(
                services.connections.create(transport, user, room, "token").open(None)
                for transport, user in zip(joiners, users[1:], strict=True)
            )
        )

        everyone = [u.username for u in users]
        for transport in (first, joiners[0], joiners[-1]):
            await eventually(
                lambda t=transport: [u["username"] for u in t.of_type("presence")[-1]["users"]] == everyone,
                what="the whole list",
            )
        # The list of one, then a few coalesced updates, not 39.
        assert len(first.of_type("presence")) <= 4
        # Each joiner is shown what was last read, with itself in it: the
        # store is read a few times, not once per joiner.
        assert reads <= 4
    finally:
        await services.close()
