"""One contract suite for :class:`chat.broker.Broker`, run against every backend.

Each test gets a fresh, connected broker: the in-process ``memory://`` one, a
:class:`~chat.broker.redis.RedisBroker` on the session's redis-server, or a
:class:`~chat.broker.redis_cluster.RedisClusterBroker` on the session's
3-master Redis Cluster. Channels are server-wide (cluster-wide), so every test
names its channels with a uuid. Outages of one cluster master are tested in
``test_broker_cluster.py``.

The Redis-only tests at the end stop and restart the session's redis-server
(same port) with ``outage()``, which restarts it even when the test fails, so
later tests find it up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chat.broker import RESYNC, Broker, BrokerClosed, Event, open_backplane
from chat.broker.redis import POOL_CONNECTIONS, RedisBroker, RedisPresence
from chat.errors import Unavailable
from tests.support.brokers import RECOVERY_TIMEOUT, Collector, publish_until_received
from tests.support.services import RedisServer
from tests.support.waiting import eventually

BACKENDS = ["memory", "redis", "redis+cluster"]
# The fixture that names each backend's URL (memory needs none).
URL_FIXTURES = {"redis": "redis_url", "redis+cluster": "redis_cluster_url"}
# Bounds every single wait for an event; generous, a healthy run takes milliseconds.
EVENT_TIMEOUT = 5.0


@pytest.fixture(params=BACKENDS)
def broker_url(request: pytest.FixtureRequest) -> str:
    # getfixturevalue keeps Redis out of the runs that do not need it entirely.
    return "memory://" if request.param == "memory" else request.getfixturevalue(URL_FIXTURES[request.param])


@pytest.fixture(params=["redis", "redis+cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A backend several processes can share."""
    return request.getfixturevalue(URL_FIXTURES[request.param])


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    hub = open_backplane(broker_url).broker
    await hub.connect()
    try:
        yield hub
    finally:
        await hub.disconnect()


@pytest.fixture
async def redis_only(redis_url: str) -> AsyncIterator[RedisBroker]:
    """For behaviour only Redis has (several processes, outages): not parametrized."""
    hub = open_backplane(redis_url).broker
    assert isinstance(hub, RedisBroker)
    await hub.connect()
    try:
        yield hub
    finally:
        await hub.disconnect()


def channel(label: str = "room") -> str:
    return f"test:{label}:{uuid.uuid4().hex}"


async def next_event(broker: Broker, timeout: float = EVENT_TIMEOUT) -> Event:
    return await asyncio.wait_for(broker.next_published(), timeout)


async def next_payload_event(broker: Broker, timeout: float = EVENT_TIMEOUT) -> Event:
    """The next event that is not RESYNC (a resync is always allowed in between)."""
    while True:
        event = await next_event(broker, timeout)
        if event is not RESYNC:
            return event


# -- delivery -------------------------------------------------------------------


async def test_a_subscribed_channel_receives_payloads_in_publish_order(broker: Broker) -> None:
    room = channel()
    await broker.subscribe(room)

    sent = [f"payload {i}" for i in range(100)]
    for payload in sent:
        await broker.publish(room, payload)

    received = [await next_payload_event(broker) for _ in sent]
    assert [event.payload for event in received] == sent
    assert {event.channel for event in received} == {room}


async def test_a_channel_that_is_not_subscribed_receives_nothing(broker: Broker) -> None:
    heard, unheard = channel("heard"), channel("unheard")
    await broker.subscribe(heard)

    await broker.publish(unheard, "lost")
    await broker.publish(heard, "sentinel")

    # Events come in publish order, so anything from `unheard` would come first.
    assert await next_payload_event(broker) == Event(channel=heard, payload="sentinel")


async def test_unsubscribe_stops_delivery(broker: Broker) -> None:
    leaving, staying = channel("leaving"), channel("staying")
    await broker.subscribe(leaving)
    await broker.subscribe(staying)
    await broker.publish(leaving, "before")
    assert await next_payload_event(broker) == Event(channel=leaving, payload="before")

    await broker.unsubscribe(leaving)
    await broker.publish(leaving, "after")
    await broker.publish(staying, "sentinel")

    assert await next_payload_event(broker) == Event(channel=staying, payload="sentinel")


async def test_two_channels_interleave_in_publish_order_each_event_naming_its_channel(
    broker: Broker, broker_url: str
) -> None:
    first, second = channel("first"), channel("second")
    await broker.subscribe(first)
    await broker.subscribe(second)

    sent = [(first if i % 3 else second, f"payload {i}") for i in range(30)]
    for on, payload in sent:
        await broker.publish(on, payload)

    received = [(event.channel, event.payload) for event in [await next_payload_event(broker) for _ in sent]]
    if broker_url.startswith("redis+cluster"):
        # Sharded pub/sub orders each channel, not channels on two masters
        # (two connections): the fan-out only needs each room in order.
        for on in (first, second):
            assert [each for each in received if each[0] == on] == [each for each in sent if each[0] == on]
        assert sorted(received) == sorted(sent)
    else:
        assert received == sent


async def test_unicode_payloads_round_trip_unchanged(broker: Broker) -> None:
    room = channel()
    await broker.subscribe(room)
    payloads = ['{"body":"héllo wörld"}', "日本語のメッセージ", "emoji 🎉👩‍💻", "null\0byte", "line\nbreak"]

    for payload in payloads:
        await broker.publish(room, payload)

    assert [(await next_payload_event(broker)).payload for _ in payloads] == payloads


async def test_disconnect_makes_a_pending_next_published_raise_broker_closed(broker: Broker) -> None:
    await broker.subscribe(channel())
    pending = asyncio.create_task(broker.next_published())
    await asyncio.sleep(0.1)  # let it start waiting
    assert not pending.done()

    await broker.disconnect()

    with pytest.raises(BrokerClosed):
        await asyncio.wait_for(pending, EVENT_TIMEOUT)


async def test_disconnect_wakes_a_next_published_that_waits_for_a_first_channel(broker: Broker) -> None:
    pending = asyncio.create_task(broker.next_published())
    await asyncio.sleep(0.1)
    assert not pending.done()

    await broker.disconnect()

    with pytest.raises(BrokerClosed):
        await asyncio.wait_for(pending, EVENT_TIMEOUT)


# -- Redis only: several processes, and Redis going away ------------------------


async def test_two_processes_subscribed_to_one_channel_both_receive_what_one_publishes(shared_url: str) -> None:
    one, other = open_backplane(shared_url).broker, open_backplane(shared_url).broker
    await one.connect()
    await other.connect()
    try:
        room = channel()
        await one.subscribe(room)
        await other.subscribe(room)

        await one.publish(room, "to everyone")

        assert await next_payload_event(one) == Event(channel=room, payload="to everyone")
        assert await next_payload_event(other) == Event(channel=room, payload="to everyone")
    finally:
        await other.disconnect()
        await one.disconnect()


@pytest.mark.slow
async def test_after_a_redis_restart_the_broker_yields_resync_and_hears_channels_subscribed_before(
    redis_only: RedisBroker, redis_server: RedisServer
) -> None:
    first, second = channel("first"), channel("second")
    await redis_only.subscribe(first)
    await redis_only.subscribe(second)
    collector = Collector(redis_only)
    try:
        await redis_only.publish(first, "before")
        await eventually(lambda: collector.payloads(first) == ["before"], EVENT_TIMEOUT, "live delivery")

        with redis_server.outage():
            await asyncio.sleep(0.5)  # the listener is waiting in next_published meanwhile

        await eventually(lambda: collector.resyncs >= 1, RECOVERY_TIMEOUT, "RESYNC after the restart")
        await publish_until_received(redis_only, collector, first, "after")
        await publish_until_received(redis_only, collector, second, "after too")
        assert collector.payloads(first)[0] == "before"
        assert not collector.closed
    finally:
        await collector.stop()


@pytest.mark.slow
async def test_a_burst_of_commands_waits_for_a_bounded_pool_and_every_one_is_answered(redis_only: RedisBroker) -> None:
    # Unbounded, a handshake storm opened a connection per concurrent command
    # until Redis refused new ones; bounded, the burst queues for connections.
    presence = RedisPresence(redis_only)
    burst = POOL_CONNECTIONS * 4

    found = await asyncio.gather(*(presence.online(f"room-{uuid.uuid4().hex}") for _ in range(burst)))

    assert found == [[]] * burst
    assert redis_only.require_client().connection_pool.max_connections == POOL_CONNECTIONS
    await redis_only.publish_many([(channel(), f"message {n}") for n in range(burst)])  # pipelined, answered


async def test_publish_and_ping_raise_unavailable_while_redis_is_down(
    redis_only: RedisBroker, redis_server: RedisServer
) -> None:
    await redis_only.ping()  # connected first: the failure is Redis going away
    with redis_server.outage():
        with pytest.raises(Unavailable):
            await asyncio.wait_for(redis_only.publish(channel(), "nobody hears this"), EVENT_TIMEOUT)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(redis_only.ping(), EVENT_TIMEOUT)

    await asyncio.wait_for(redis_only.ping(), RECOVERY_TIMEOUT)  # and it recovers


@pytest.mark.slow
async def test_subscribe_while_redis_is_down_does_not_raise_and_the_channel_is_live_once_it_returns(
    redis_only: RedisBroker, redis_server: RedisServer
) -> None:
    room = channel()
    collector = Collector(redis_only)  # listening before the first channel exists
    try:
        with redis_server.outage():
            await asyncio.wait_for(redis_only.subscribe(room), EVENT_TIMEOUT)

        await publish_until_received(redis_only, collector, room, "hello again")
        assert not collector.closed
    finally:
        await collector.stop()


@pytest.mark.slow
async def test_subscribe_while_redis_is_down_with_other_channels_live_keeps_them_all(
    redis_only: RedisBroker, redis_server: RedisServer
) -> None:
    before, during = channel("before"), channel("during")
    await redis_only.subscribe(before)
    collector = Collector(redis_only)
    try:
        await redis_only.publish(before, "live")
        await eventually(lambda: collector.payloads(before) == ["live"], EVENT_TIMEOUT, "live delivery")
        with redis_server.outage():
            await asyncio.wait_for(redis_only.subscribe(during), EVENT_TIMEOUT)

        await publish_until_received(redis_only, collector, during, "new channel")
        await publish_until_received(redis_only, collector, before, "old channel")
        assert collector.resyncs >= 1
    finally:
        await collector.stop()
