"""Scrolling up in a real browser reads a room back to its first message, keeping the reader's place."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser as Chromium

from tests.support.pages import register
from tests.support.server import ServerFactory
from tests.support.storage import seed_messages

TOTAL = 1000


async def test_scrolling_up_loads_older_messages_back_to_the_first(
    server_factory: ServerFactory, chromium: Chromium, artifacts_dir: Path
) -> None:
    server = server_factory()
    context = await chromium.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    username = f"reader_{uuid.uuid4().hex[:6]}"
    await register(page, server.base_url, username)
    await page.fill("input[name=name]", "Long room")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_url(f"{server.base_url}/rooms/*")
    room_id = page.url.rsplit("/", 1)[1]
    await seed_messages(server.database_url, username, room_id, (f"m{i}" for i in range(1, TOTAL + 1)))
    await page.reload()
    await page.wait_for_selector("#connection-state.state-connected")
    # The latest 50, and the 50 before when the browser put the reader back at the top.
    assert await page.locator("li.message").count() in (50, 100)

    # Scroll to the top again and again: each time the page before loads, and
    # the message that was at the top stays where the reader left it.
    for _ in range(40):
        first = page.locator("li.message").first
        first_seq = await first.get_attribute("data-seq")
        if first_seq == "1":
            break
        await page.evaluate("window.scrollTo(0, 0)")
        await page.wait_for_selector(f"li.message[data-seq='{int(first_seq or 0) - 1}']")
        kept = page.locator(f"li.message[data-seq='{first_seq}']")
        box = await kept.bounding_box()
        assert box is not None and 0 <= box["y"] < 768  # still in view: the place was kept

    seqs = [int(seq) for seq in await page.locator("li.message").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == list(range(1, TOTAL + 1))
    assert await page.locator("#older").is_hidden()
    await page.screenshot(path=str(artifacts_dir / "scrolled-back.png"))
    assert errors == []
