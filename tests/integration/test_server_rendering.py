"""Rendering message bodies never holds the event loop, against a real server process.

Security review, issue 20, finding 4: 4,000 characters of ``[http://`` took
about 0.1 s to render on the loop, so two accounts sending twenty each made
``/healthz`` wait up to 1.5 s. The process must keep answering while it
renders the worst bodies a sender may send.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from chat.services.conversation.messages import MAX_BODY_LENGTH
from tests.support.client import Browser
from tests.support.server import ChildServerFactory
from tests.support.storage import connected_storage

SENDERS = 2
MESSAGES_EACH = 20
PROBE_INTERVAL_SECONDS = 0.02
P99_LIMIT_SECONDS = 0.1
# Among the slowest bodies before the fix (0.14 s and 0.19 s on the loop;
# their cost grew with the square of their length), up to the body limit.
PATHOLOGICAL = [
    ("[http://" * MAX_BODY_LENGTH)[:MAX_BODY_LENGTH],
    ("[://" * MAX_BODY_LENGTH)[:MAX_BODY_LENGTH],
]


async def test_two_accounts_sending_the_slowest_bodies_leave_healthz_answering_within_100_ms(
    child_server_factory: ChildServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    # A child process: the subject is its event loop, which must not share a GIL with the clients.
    server = child_server_factory()
    prober = open_browser(server.base_url)
    senders = [open_browser(server.base_url) for _ in range(SENDERS)]
    rooms = []
    for browser in senders:
        await browser.register()
        rooms.append(await browser.create_room())
    sockets = [await browser.socket(room_id) for browser, room_id in zip(senders, rooms, strict=True)]
    for sock in sockets:
        await sock.join()
    assert (await prober.get("/healthz")).code == 200  # a warm connection before timing

    waits: list[float] = []
    sending = True

    async def probe() -> None:
        while sending:
            started = time.perf_counter()
            response = await prober.get("/healthz")
            waits.append(time.perf_counter() - started)
            assert response.code == 200
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)

    prober_task = asyncio.create_task(probe())
    try:
        sent = [
            [await sock.send_message(PATHOLOGICAL[i % len(PATHOLOGICAL)]) for i in range(MESSAGES_EACH)]
            for sock in sockets
        ]
        answers = await asyncio.gather(
            *(sock.answers(client_ids, timeout=60) for sock, client_ids in zip(sockets, sent, strict=True))
        )
    finally:
        sending = False
        await prober_task

    assert [frame["type"] for frames in answers for frame in frames] == ["ack"] * (SENDERS * MESSAGES_EACH)
    async with connected_storage(server.database_url) as storage:
        for room_id in rooms:
            stored, _ = await storage.messages.latest(room_id, MESSAGES_EACH + 1)
            assert [m.body for m in stored] == [PATHOLOGICAL[i % len(PATHOLOGICAL)] for i in range(MESSAGES_EACH)]
            assert all(m.html.startswith("<p>") for m in stored)
    p99 = statistics.quantiles(waits, n=100, method="inclusive")[98]
    assert p99 < P99_LIMIT_SECONDS, (
        f"/healthz p99 {p99 * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms ({len(waits)} probes)"
    )
