"""A person's messages are stored in the order sent, even when a rate limit refuses some of a burst."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from tests.support.client import Browser
from tests.support.server import ServerFactory
from tests.support.storage import connected_storage

BURST = 200


async def test_a_rate_limited_burst_of_200_pipelined_sends_is_stored_in_order(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="40 per 2 seconds")
    browser = open_browser(server.base_url)
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()

    # The client of docs/protocol.md: everything unacked goes out at once, in
    # order; after a rate_limited answer, wait retry_after and send again
    # from the first refused message.
    unacked = {uuid.uuid4().hex: f"burst {i}" for i in range(BURST)}
    rounds = 0
    while unacked:
        rounds += 1
        for client_id, body in unacked.items():
            await sock.send_message(body, client_id)
            # Paced like typing over a network: the limit's places then free
            # one by one while the rest of the burst is still arriving.
            await asyncio.sleep(0.002)
        answers = await sock.answers(list(unacked))
        kinds = [answer["type"] for answer in answers]
        # Refusals form a suffix: nothing sent after a refused message was stored before it.
        assert kinds == sorted(kinds, key=lambda kind: kind == "error"), kinds
        refused = [answer for answer in answers if answer["type"] == "error"]
        assert {answer["code"] for answer in refused} <= {"rate_limited"}
        for answer in answers:
            if answer["type"] == "ack":
                del unacked[answer["client_id"]]
        if refused:
            # From the first refused message, after its wait.
            await asyncio.sleep(refused[0]["retry_after"])
    assert rounds > 2  # the limit did refuse parts of the burst

    async with connected_storage(server.database_url) as storage:
        stored, _ = await storage.messages.after(room_id, 0, BURST + 10)
    assert [m.body for m in stored] == [f"burst {i}" for i in range(BURST)]
