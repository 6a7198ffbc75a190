"""Messages typed faster than the rate limit allows are all stored, in the order typed."""

from __future__ import annotations

import uuid

from playwright.async_api import Browser as Chromium

from tests.support.pages import connected, create_room, register
from tests.support.server import ServerFactory
from tests.support.storage import connected_storage
from tests.support.waiting import eventually

BURST = 200


async def test_a_rate_limited_burst_of_200_from_the_page_is_stored_in_the_order_typed(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="40 per 2 seconds")
    base = server.base_url
    context = await chromium.new_context()
    page = await context.new_page()
    await register(page, base, f"fast_{uuid.uuid4().hex[:6]}")
    room_id = await create_room(page, base, "Burst room")
    await connected(page)

    # Faster than anyone types: every message is submitted in one go.
    await page.evaluate(
        """(count) => {
            const input = document.getElementById("body");
            const form = document.getElementById("composer");
            for (let i = 0; i < count; i++) {
                input.value = `burst ${i}`;
                form.requestSubmit();
            }
        }""",
        BURST,
    )

    async def all_stored() -> bool:
        pending = await page.locator("li.message.pending, li.message.failed").count()
        return pending == 0 and await page.locator("li.message[data-seq]").count() == BURST

    await eventually(all_stored, 60, "every message of the burst acked", interval=0.25)

    shown = await page.locator("li.message[data-seq] .body").all_text_contents()
    assert shown == [f"burst {i}" for i in range(BURST)]
    async with connected_storage(server.database_url) as storage:
        stored, _ = await storage.messages.after(room_id, 0, BURST + 10)
    assert [m.body for m in stored] == [f"burst {i}" for i in range(BURST)]
    assert await page.locator("#body").input_value() == ""
    await context.close()
