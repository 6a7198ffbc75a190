"""Sessions and limits across processes: supervisord + nginx + Redis + MongoDB (FerretDB).

Signing out on one process closes the session's sockets on the other within
a second (through the broker's control channel), and a per-user limit holds
however a user spreads sends over processes (counted in Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chat.tools.cluster import Cluster
from tests.support.client import Browser, RoomSocket
from tests.support.cluster import socket_on


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
