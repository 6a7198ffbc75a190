"""The Redis Cluster backplane beyond the shared contracts: sharding, a master's crash, limits, two servers.

The broker and presence contracts run on the cluster too
(``test_broker_contract.py``, ``test_presence_contract.py``); these tests are
about what only a cluster has. They share the session's 3-master cluster and
isolate themselves by room id. A test that kills a master starts it again with
``crash()``, even when it fails, and waits until the cluster is whole.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.crc import key_slot

from chat.broker import Backplane, Broker, Event, open_backplane, room_channel
from chat.broker.redis_cluster import parse_cluster_url
from chat.errors import RateLimited, Unavailable
from chat.services.limits import Limiter
from chat.wire.actions import Action
from tests.support.brokers import RECOVERY_TIMEOUT, Collector, publish_until_received
from tests.support.client import Browser
from tests.support.redis_cluster import RedisClusterGroup, RedisClusterNode
from tests.support.server import ServerFactory
from tests.support.waiting import eventually

EVENT_TIMEOUT = 5.0


@pytest.fixture
async def backplanes(redis_cluster_url: str) -> AsyncIterator[Callable[[], Backplane]]:
    """Connected backplanes on the cluster, one per simulated process; all disconnected after the test."""
    opened: list[Backplane] = []

    def open_one() -> Backplane:
        opened.append(open_backplane(redis_cluster_url))
        return opened[-1]

    yield open_one
    for backplane in opened:
        await backplane.broker.disconnect()


async def connected(backplane: Backplane) -> Broker:
    await backplane.broker.connect()
    return backplane.broker


def rooms_by_master(cluster: RedisClusterGroup) -> dict[RedisClusterNode, str]:
    """A fresh room for each master, chosen so that the room's channel hashes to that master's slots."""
    rooms: dict[RedisClusterNode, str] = {}
    while len(rooms) < len(cluster.nodes):
        room_id = uuid.uuid4().hex
        rooms.setdefault(cluster.owner(room_channel(room_id)), room_id)
    return rooms


def test_a_cluster_url_names_its_startup_nodes_and_credentials() -> None:
    address = parse_cluster_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001")
    assert address.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert address.password == "s3cret" and address.username is None
    assert open_backplane("redis+cluster://a:7000,b:7001").limits_uri == "async+redis+cluster://a:7000,b:7001"
    with pytest.raises(ValueError, match="database 0"):
        parse_cluster_url("redis+cluster://a:7000/2")
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://a,b:7001")
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        open_backplane("redis+sentinel://a:26379")


async def test_rooms_whose_channels_hash_to_different_masters_all_deliver_each_on_its_own_master(
    redis_cluster: RedisClusterGroup, backplanes: Callable[[], Backplane]
) -> None:
    rooms = rooms_by_master(redis_cluster)
    subscriber, publisher = await connected(backplanes()), await connected(backplanes())
    for room_id in rooms.values():
        await subscriber.subscribe(room_channel(room_id))

    for room_id in rooms.values():
        await publisher.publish(room_channel(room_id), f"hello {room_id}")

    received = {await asyncio.wait_for(subscriber.next_published(), EVENT_TIMEOUT) for _ in rooms}
    assert received == {Event(room_channel(room_id), f"hello {room_id}") for room_id in rooms.values()}
    # Sharded: each channel (named as on one Redis) lives on its slot's master only.
    for node in redis_cluster.nodes:
        with node.client() as client:
            held = set(client.execute_command("PUBSUB", "SHARDCHANNELS", "chat:room:*"))
        assert room_channel(rooms[node]) in held
        assert held.isdisjoint(room_channel(room_id) for owner, room_id in rooms.items() if owner is not node)


@pytest.mark.slow
async def test_a_master_killed_and_restarted_makes_publishes_unavailable_then_the_subscriber_resyncs(
    redis_cluster: RedisClusterGroup, backplanes: Callable[[], Backplane]
) -> None:
    rooms = rooms_by_master(redis_cluster)
    victim = next(iter(rooms))
    subscriber, publisher = await connected(backplanes()), await connected(backplanes())
    for room_id in rooms.values():
        await subscriber.subscribe(room_channel(room_id))
    collector = Collector(subscriber)
    try:
        on_victim = room_channel(rooms[victim])
        await publisher.publish(on_victim, "before")
        await eventually(lambda: collector.payloads(on_victim) == ["before"], EVENT_TIMEOUT, "live delivery")
        assert subscriber.receiving

        with redis_cluster.crash(victim):
            with pytest.raises(Unavailable):
                await asyncio.wait_for(publisher.publish(on_victim, "nobody hears this"), EVENT_TIMEOUT)
            await eventually(lambda: not subscriber.receiving, EVENT_TIMEOUT, "the subscriber noticing")
            await asyncio.sleep(0.5)  # the repair retries meanwhile; nothing may crash

        await eventually(lambda: collector.resyncs >= 1, RECOVERY_TIMEOUT, "RESYNC after the restart")
        for room_id in rooms.values():
            await publish_until_received(publisher, collector, room_channel(room_id), f"after {room_id}")
        await eventually(lambda: subscriber.receiving, RECOVERY_TIMEOUT, "receiving again")
        assert collector.payloads(on_victim)[0] == "before"
        assert not collector.closed
    finally:
        await collector.stop()


@pytest.mark.slow
async def test_subscribe_while_its_master_is_down_does_not_raise_and_the_channel_is_live_once_it_returns(
    redis_cluster: RedisClusterGroup, backplanes: Callable[[], Backplane]
) -> None:
    rooms = rooms_by_master(redis_cluster)
    victim = next(iter(rooms))
    subscriber, publisher = await connected(backplanes()), await connected(backplanes())
    await subscriber.ping()  # the slot map is known before the master goes
    collector = Collector(subscriber)
    try:
        with redis_cluster.crash(victim):
            await asyncio.wait_for(subscriber.subscribe(room_channel(rooms[victim])), EVENT_TIMEOUT)
            assert not subscriber.receiving

        await publish_until_received(publisher, collector, room_channel(rooms[victim]), "hello again")
        assert collector.resyncs >= 1
        assert not collector.closed
    finally:
        await collector.stop()


@pytest.mark.slow
async def test_a_room_whose_slot_moves_to_another_master_is_followed_there_and_resynced(
    redis_cluster: RedisClusterGroup, backplanes: Callable[[], Backplane]
) -> None:
    on = room_channel(uuid.uuid4().hex)
    subscriber, publisher = await connected(backplanes()), await connected(backplanes())
    await subscriber.subscribe(on)
    collector = Collector(subscriber)
    try:
        await publisher.publish(on, "before")
        await eventually(lambda: collector.payloads(on) == ["before"], EVENT_TIMEOUT, "live delivery")
        target = next(node for node in redis_cluster.nodes if node is not redis_cluster.owner(on))

        # The old master drops the channel when it gives the slot away (Redis
        # 7 tells the subscriber with a sunsubscribe), publishes go to the new one.
        with redis_cluster.slot_moved(key_slot(on.encode()), target):
            await eventually(lambda: collector.resyncs >= 1, RECOVERY_TIMEOUT, "RESYNC after the move")
            await publish_until_received(publisher, collector, on, "after the move")
            with target.client() as client:
                assert on in client.execute_command("PUBSUB", "SHARDCHANNELS", on)
        assert not collector.closed
    finally:
        await collector.stop()


async def test_rate_limits_are_counted_across_processes_on_the_cluster(redis_cluster_url: str) -> None:
    uri = open_backplane(redis_cluster_url).limits_uri
    assert uri.startswith("async+redis+cluster://")
    one, two = Limiter(uri, {Action.SEND: "3 per minute"}), Limiter(uri, {Action.SEND: "3 per minute"})
    user, other_user = uuid.uuid4().hex, uuid.uuid4().hex

    await one.take(Action.SEND, user)
    await two.take(Action.SEND, user)
    await one.take(Action.SEND, user)
    # The limiter lets everything through when its store is down, so a
    # refusal proves the counts really are on the cluster, shared.
    with pytest.raises(RateLimited):
        await two.take(Action.SEND, user)
    await two.take(Action.SEND, other_user)
    await one.close()
    await two.close()


async def test_socket_leases_are_shared_across_processes_on_the_cluster(
    backplanes: Callable[[], Backplane],
) -> None:
    first, second = backplanes(), backplanes()
    await connected(first)
    await connected(second)
    pools = [f"user:{uuid.uuid4().hex}" for _ in range(8)]  # spread over the slots

    for pool in pools:
        assert await first.leases.acquire(pool, "a:1", limit=2, ttl=30)
        assert await second.leases.acquire(pool, "b:1", limit=2, ttl=30)
        assert not await second.leases.acquire(pool, "b:2", limit=2, ttl=30)
    await first.leases.renew([(pool, "a:1") for pool in pools], ttl=30)
    await first.leases.release(pools[0], "a:1")

    assert await second.leases.count(pools[0]) == 1
    assert [await first.leases.count(pool) for pool in pools[1:]] == [2] * (len(pools) - 1)
    # A process going away gives back its places in every pool at once.
    await first.leases.release_many([(pool, "a:1") for pool in pools])
    assert [await second.leases.count(pool) for pool in pools] == [1] * len(pools)


@pytest.mark.slow
async def test_two_chat_processes_on_the_cluster_deliver_a_message_between_their_sockets(
    server_factory: ServerFactory,
    redis_cluster_url: str,
    sqlite_url: str,
    open_browser: Callable[[str], Browser],
) -> None:
    servers = [server_factory(database_url=sqlite_url, CHAT_BROKER_URL=redis_cluster_url) for _ in range(2)]
    alice, bob = open_browser(servers[0].base_url), open_browser(servers[1].base_url)
    await alice.register()
    await bob.register()
    room_id = await alice.create_room()
    a, b = await alice.socket(room_id), await bob.socket(room_id)
    (hello_a, _), (hello_b, _) = await a.join(), await b.join()
    assert hello_a["instance"] != hello_b["instance"]

    for sender, receiver, body in ((a, b, "across the cluster"), (b, a, "and back")):
        client_id = await sender.send_message(body)
        assert (await sender.acked(client_id))["body"] == body
        frame = await receiver.skip_to("message")  # past the receiver's own ack and message, if any
        while frame["message"]["client_id"] != client_id:
            frame = await receiver.skip_to("message")
        assert frame["message"]["body"] == body
    for server in servers:
        assert server.uncaught_errors() == []
