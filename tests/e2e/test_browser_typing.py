"""Someone typing is shown to the others in the room, and goes away by itself."""

from __future__ import annotations

import time

from playwright.async_api import Browser as Chromium

from tests.support.pages import connected, create_room, say, two_people
from tests.support.server import ServerFactory
from tests.support.waiting import eventually


async def test_the_others_see_who_is_typing_until_the_message_arrives_or_it_expires(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    people = await two_people(chromium, base)
    alice, bob, alice_name = people.alice.page, people.bob.page, people.alice.name
    await create_room(alice, base, "Typing room")
    await bob.goto(alice.url)
    await connected(alice, bob)

    await alice.locator("#body").press_sequentially("hello the")
    await bob.wait_for_selector(f"#typing >> text={alice_name} is typing…")
    assert await alice.locator("#typing").text_content() == ""  # not to the typist

    await say(alice, "hello there")
    await bob.wait_for_selector("li.message >> text=hello there")
    assert await bob.locator("#typing").text_content() == ""  # the message took it away

    await alice.locator("#body").press_sequentially("one more")
    await bob.wait_for_selector(f"#typing >> text={alice_name} is typing…")
    started = time.monotonic()

    # Polled from here: the page's CSP forbids the evaluated strings wait_for_function uses.
    async def gone() -> bool:
        return await bob.locator("#typing").text_content() == ""

    await eventually(gone, 15, "the notice gone by itself", interval=0.2)
    assert time.monotonic() - started > 3  # it lasts a few seconds, then goes by itself
    assert people.errors == []
    await people.close()
