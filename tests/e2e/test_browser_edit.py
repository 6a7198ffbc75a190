"""Editing and deleting one's own messages in a real browser: seen live by the room and after a resume."""

from __future__ import annotations

from playwright.async_api import Browser as Chromium

from tests.support.pages import connected, create_room, say, two_people
from tests.support.server import ServerFactory

# Keeps every WebSocket the page opens in window.__sockets (real ones), so the
# test can drop the connection the way a network does.
KEEP_SOCKETS = """
window.__sockets = [];
const RealWebSocket = window.WebSocket;
window.WebSocket = class extends RealWebSocket {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""


def message(text: str) -> str:
    return f"li.message:not(.pending):has(.body:has-text('{text}'))"


async def test_the_author_edits_and_deletes_and_a_reader_sees_it_live_and_after_a_resume(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    people = await two_people(chromium, base, init_script=KEEP_SOCKETS)
    alice, bob, bob_ctx = people.alice.page, people.bob.page, people.bob.context
    await create_room(alice, base, "Edit room")
    await bob.goto(alice.url)
    await connected(alice, bob)

    await say(alice, "helo wrold")
    await say(alice, "a second thought")
    await bob.wait_for_selector(message("a second thought"))
    # Only the author is offered Edit and Delete.
    assert await bob.locator("li.message .actions:visible").count() == 0
    assert await alice.locator("li.message .actions:visible").count() == 2

    # Edit: the message changes in place, marked edited, for everyone.
    typo = alice.locator(message("helo wrold"))
    await typo.locator("button[data-action=edit]").click()
    editor = alice.locator("form.edit textarea")
    await editor.fill("hello world")
    await editor.press("Enter")
    for page in (alice, bob):
        fixed = page.locator(message("hello world"))
        await fixed.locator(".edited:visible").wait_for()
    assert await bob.locator("li.message").count() == 2

    # Offline: bob's page misses an edit and a deletion, then resumes.
    await bob_ctx.set_offline(True)
    await bob.evaluate("window.__sockets.at(-1).close()")
    await bob.wait_for_selector("#room:not([data-state=connected])")
    second = alice.locator(message("a second thought"))
    alice.once("dialog", lambda dialog: dialog.accept())
    await second.locator("button[data-action=delete]").click()
    await alice.wait_for_selector("li.message.deleted >> text=message deleted")
    fixed = alice.locator(message("hello world"))
    await fixed.locator("button[data-action=edit]").click()
    await alice.locator("form.edit textarea").fill("hello, world")
    await alice.locator("form.edit button[type=submit]").click()
    await alice.wait_for_selector(message("hello, world"))

    await bob_ctx.set_offline(False)
    await bob.wait_for_selector("#connection-state.state-connected")
    await bob.wait_for_selector(message("hello, world"))
    await bob.wait_for_selector("li.message.deleted >> text=message deleted")
    assert await bob.locator("li.message").count() == 2  # the deleted one keeps its place

    # And a fresh page shows the same.
    await bob.reload()
    await bob.wait_for_selector(message("hello, world"))
    assert await bob.locator("li.message.deleted .body").text_content() == "message deleted"

    assert people.errors == []
    await people.close()
