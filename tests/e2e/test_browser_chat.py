"""Two people chat in a real browser: the pages, the script and the socket together."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser as Chromium

from tests.support.pages import register, say
from tests.support.server import ServerFactory


async def test_two_users_chat_live_in_the_browser_and_html_stays_text(
    server_factory: ServerFactory,
    chromium: Chromium,
    artifacts_dir: Path,
) -> None:
    server = server_factory()
    base = server.base_url
    alice_ctx, bob_ctx = await chromium.new_context(), await chromium.new_context()
    alice, bob = await alice_ctx.new_page(), await bob_ctx.new_page()
    errors: list[str] = []
    for page in (alice, bob):
        page.on("pageerror", lambda exc: errors.append(str(exc)))

    await register(alice, base, f"alice_{uuid.uuid4().hex[:6]}")
    await register(bob, base, f"bob_{uuid.uuid4().hex[:6]}")

    await alice.fill("input[name=name]", "Browser room")
    await alice.click("form.create-room button[type=submit]")
    await alice.wait_for_url(f"{base}/rooms/*")
    room_url = alice.url
    await bob.goto(f"{base}/rooms")
    await bob.click("text=Browser room")
    await bob.wait_for_url(room_url)

    for page in (alice, bob):
        await page.wait_for_selector("#connection-state.state-connected")

    await say(alice, "hi bob")
    await bob.wait_for_selector("li.message[data-seq='1'] >> text=hi bob")
    await say(bob, "<img src=x onerror=alert(1)> hi alice")
    await alice.wait_for_selector("li.message[data-seq='2']")
    body = alice.locator("li.message[data-seq='2'] .body")
    assert await body.text_content() == "<img src=x onerror=alert(1)> hi alice"
    assert await alice.locator("li.message img").count() == 0

    # Own messages are confirmed (not pending) once acked, and nothing is doubled.
    await alice.wait_for_selector("li.message:not(.pending)[data-seq='1']")
    assert await alice.locator("li.message").count() == 2
    assert await bob.locator("li.message").count() == 2

    # A reload renders the same history on the server and resumes live.
    await bob.reload()
    await bob.wait_for_selector("#connection-state.state-connected")
    assert await bob.locator("li.message").count() == 2
    await say(alice, "after bob reloaded")
    await bob.wait_for_selector("li.message[data-seq='3'] >> text=after bob reloaded")

    await alice.screenshot(path=str(artifacts_dir / "alice.png"), full_page=True)
    await bob.screenshot(path=str(artifacts_dir / "bob.png"), full_page=True)
    assert errors == []
