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
from typing import Any

import pytest

from chat.services.conversation.messages import MAX_BODY_LENGTH
from tests.support.client import Browser, RoomSocket
from tests.support.server import ChildServerFactory
from tests.support.storage import connected_storage

SENDERS = 2
MESSAGES_EACH = 20
PROBE_INTERVAL_SECONDS = 0.02
# How much later /healthz may answer while the worst bodies render than while
# plain ones do, at the 99th percentile. Measured against plain sends in the
# same run, so a machine busy with other work (parallel tests) moves both.
# Before the fix the worst bodies alone made it 0.235 s (up to 1.5 s).
P99_MARGIN_SECONDS = 0.1
# Among the slowest bodies before the fix (0.14 s and 0.19 s on the loop;
# their cost grew with the square of their length), up to the body limit.
PATHOLOGICAL = [
    ("[http://" * MAX_BODY_LENGTH)[:MAX_BODY_LENGTH],
    ("[://" * MAX_BODY_LENGTH)[:MAX_BODY_LENGTH],
]
PLAIN = ["plain words, nothing to render"]


def p99(waits: list[float]) -> float:
    return statistics.quantiles(waits, n=100, method="inclusive")[98]


async def healthz_waits_while_sending(
    prober: Browser, sockets: list[RoomSocket], bodies: list[str]
) -> tuple[list[float], list[list[dict[str, Any]]]]:
    """How long each /healthz took while every socket sent MESSAGES_EACH of ``bodies`` (in turn); the answers."""
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
        sent = [[await sock.send_message(bodies[i % len(bodies)]) for i in range(MESSAGES_EACH)] for sock in sockets]
        answers = await asyncio.gather(
            *(sock.answers(client_ids, timeout=60) for sock, client_ids in zip(sockets, sent, strict=True))
        )
    finally:
        sending = False
        await prober_task
    return waits, answers


# A latency bound: run by itself, after the parallel workers (see the Makefile).
@pytest.mark.serial
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

    plain_waits, _ = await healthz_waits_while_sending(prober, sockets, PLAIN)
    waits, answers = await healthz_waits_while_sending(prober, sockets, PATHOLOGICAL)

    assert [frame["type"] for frames in answers for frame in frames] == ["ack"] * (SENDERS * MESSAGES_EACH)
    async with connected_storage(server.database_url) as storage:
        for room_id in rooms:
            stored, _ = await storage.messages.latest(room_id, 2 * MESSAGES_EACH + 1)
            expected = [*PLAIN * MESSAGES_EACH, *(PATHOLOGICAL[i % len(PATHOLOGICAL)] for i in range(MESSAGES_EACH))]
            assert [m.body for m in stored] == expected
            assert all(m.html.startswith("<p>") for m in stored)
    assert p99(waits) < p99(plain_waits) + P99_MARGIN_SECONDS, (
        f"/healthz p99 {p99(waits) * 1000:.0f} ms rendering, {p99(plain_waits) * 1000:.0f} ms with plain sends;"
        f" max {max(waits) * 1000:.0f} ms ({len(waits)} probes)"
    )
