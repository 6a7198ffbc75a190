"""Sessions, memberships and limits across processes: supervisord + nginx + Redis + MongoDB (FerretDB).

Signing out on one process closes the session's sockets and event streams on
the other within a second (through the broker's control channel); a removal
made while Redis is down still cuts the member off on every process; and a
per-user limit holds however a user spreads sends over processes (counted in
Redis).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

from chat.tools.cluster import Cluster
from chat.wire.refusals import Close
from tests.support.client import Browser, RoomSocket
from tests.support.cluster import socket_on
from tests.support.services import RedisServer


async def test_signing_out_closes_the_sessions_socket_on_another_process_within_a_second(
    cluster: Cluster, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(cluster.url)
    await browser.register()
    room_id = await browser.create_room()
    here, here_instance = await socket_on(browser, room_id)
    there, _ = await socket_on(browser, room_id, avoid={here_instance})

    started = time.monotonic()
    # nginx sends the sign-out to either process: one of the two sockets is
    # always on the other one.
    assert (await browser.logout()).code == 302
    closes = await asyncio.gather(here.closed(timeout=5), there.closed(timeout=5))
    elapsed = time.monotonic() - started

    assert closes == [1008, 1008]
    assert elapsed < 1.0, f"{elapsed:.2f}s from sign-out to both closes"


async def answers(sock: RoomSocket, client_ids: list[str]) -> list[str]:
    """The type (ack or the error code) of the answer to each client_id, in order."""
    return ["ack" if frame["type"] == "ack" else frame["code"] for frame in await sock.answers(client_ids)]


async def test_the_per_user_send_limit_holds_across_processes(
    strict_cluster: Cluster, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(strict_cluster.url)
    await browser.register()
    room_id = await browser.create_room()
    first, first_instance = await socket_on(browser, room_id)
    second, _ = await socket_on(browser, room_id, avoid={first_instance})

    # 10 per minute for the user: 8 through one process, 8 through the other.
    sent_first = [await first.send_message(f"a{i}") for i in range(8)]
    sent_second = [await second.send_message(f"b{i}") for i in range(8)]
    outcomes = await answers(first, sent_first) + await answers(second, sent_second)

    assert outcomes.count("ack") == 10
    assert outcomes.count("rate_limited") == 6


def on_process(browser: Browser, port: int) -> Browser:
    """The same person (their cookies) talking to one process directly, past nginx."""
    direct = Browser(f"http://127.0.0.1:{port}")
    direct.cookies = dict(browser.cookies)
    return direct


async def test_signing_out_closes_the_sessions_event_streams_on_every_process(
    cluster: Cluster, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(cluster.url)
    await browser.register()
    streams = []
    for port in cluster.ports:
        stream = await on_process(browser, port).events()
        await stream.skip_to("badges")
        streams.append(stream)

    started = time.monotonic()
    assert (await browser.logout()).code == 302
    closes = await asyncio.gather(*(stream.closed(timeout=5) for stream in streams))

    assert closes == [1008] * len(cluster.ports)
    assert time.monotonic() - started < 1.0


async def test_after_signing_out_a_copied_cookies_stream_learns_no_new_private_room(
    cluster: Cluster, open_browser: Callable[[str], Browser]
) -> None:
    victim, owner = open_browser(cluster.url), open_browser(cluster.url)
    victim_name = await victim.register()
    await owner.register()
    copied = {**victim.cookies}  # what an attacker took
    streams = []
    for port in cluster.ports:
        thief = on_process(victim, port)
        thief.cookies = dict(copied)
        stream = await thief.events()
        await stream.skip_to("badges")
        streams.append(stream)

    await victim.logout()
    private_id = await owner.create_room(f"secret plans {uuid.uuid4().hex[:6]}", private=True)
    assert (await owner.post(f"/rooms/{private_id}/invite", {"username": victim_name})).code == 302

    for stream in streams:
        frames = await stream.frames_until_closed(timeout=5)
        assert private_id not in json.dumps(frames) and "secret plans" not in json.dumps(frames)
        assert stream.conn.close_code == 1008


async def private_room_of_two(owner: Browser, member: Browser) -> str:
    """Both register; the owner makes a private room and invites the member. Returns its id."""
    await owner.register()
    member_name = await member.register()
    private_id = await owner.create_room(private=True)
    assert (await owner.post(f"/rooms/{private_id}/invite", {"username": member_name})).code == 302
    return private_id


async def test_a_removal_while_redis_is_down_answers_and_cuts_the_member_off_everywhere(
    cluster: Cluster, cluster_redis: RedisServer, open_browser: Callable[[str], Browser]
) -> None:
    owner, member = open_browser(cluster.url), open_browser(cluster.url)
    private_id = await private_room_of_two(owner, member)
    first, second = cluster.ports[:2]
    here = await on_process(member, first).socket(private_id)  # where the owner removes them
    reading = await on_process(member, second).socket(private_id)  # scrolls back meanwhile
    idle = await on_process(member, second).socket(private_id)  # only listens
    member_id = (await here.join())[0]["user"]["id"]
    await reading.join()
    await idle.join()
    owner_here = on_process(owner, first)

    with cluster_redis.outage():
        # Stored, and said so: not a 503 with the membership already gone.
        assert (
            await owner_here.post(f"/rooms/{private_id}/remove", {"user_id": member_id, "confirmed": "yes"})
        ).code == 302
        assert await here.closed(timeout=2) == Close.REMOVED  # this process: at once
        # Asking again (an owner would, after an outage) is fine too.
        assert (
            await owner_here.post(f"/rooms/{private_id}/remove", {"user_id": member_id, "confirmed": "yes"})
        ).code == 302
        # Nothing announced reaches the other process now. A history read asks storage at once...
        await reading.send_json({"type": "fetch", "before": 1, "client_id": "scroll"})
        frames = await reading.frames_until_closed(timeout=2)
        assert reading.conn.close_code == Close.REMOVED
        assert "older" not in [frame["type"] for frame in frames]
        # ...and the re-check of open sockets comes every few seconds while Redis is away (60 s otherwise).
        assert await idle.closed(timeout=10) == Close.REMOVED
    assert (await member.get(f"/rooms/{private_id}")).code == 404


async def test_a_removal_announced_while_redis_was_down_takes_effect_when_it_is_back(
    cluster: Cluster, cluster_redis: RedisServer, open_browser: Callable[[str], Browser]
) -> None:
    owner, member = open_browser(cluster.url), open_browser(cluster.url)
    private_id = await private_room_of_two(owner, member)
    socks = [await on_process(member, port).socket(private_id) for port in cluster.ports]
    member_id = (await socks[0].join())[0]["user"]["id"]
    await socks[1].join()
    owner_on_first = on_process(owner, cluster.ports[0])

    with cluster_redis.outage():
        assert (
            await owner_on_first.post(f"/rooms/{private_id}/remove", {"user_id": member_id, "confirmed": "yes"})
        ).code == 302
        assert await socks[0].closed(timeout=2) == Close.REMOVED  # the process that removed them: at once
    # Redis back: the retried announcement, or the re-check after the broker's
    # resync, reaches the other process within seconds, not a minute.
    assert await socks[1].closed(timeout=8) == Close.REMOVED
