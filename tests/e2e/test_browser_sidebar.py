"""The sidebar: two people, three rooms and a DM; badges and the title's count follow along live."""

from __future__ import annotations

import re
import uuid

from playwright.async_api import Browser as Chromium
from playwright.async_api import Page

from tests.support.pages import connected, create_room, say, two_people
from tests.support.server import ServerFactory
from tests.support.waiting import eventually


async def badge(page: Page, title: str, kind: str) -> str:
    """The unread (kind "unread") or mention ("mentions") badge of a sidebar row, "" when hidden."""
    row = page.locator("#sidebar li[data-room-id]", has=page.locator(f".name[title='{title}']"))
    element = row.locator(f".{kind}")
    return "" if await element.is_hidden() else (await element.locator("[aria-hidden=true]").text_content() or "")


async def test_badges_and_the_title_count_update_live_across_rooms_and_a_dm(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="500 per minute")
    base = server.base_url
    people = await two_people(chromium, base)
    alice, bob = people.alice.page, people.bob.page
    alice_name, bob_name = people.alice.name, people.bob.name
    tag = uuid.uuid4().hex[:4]
    rooms = {}
    for name in ("Alpha", "Beta", "Gamma"):
        await alice.goto(f"{base}/rooms")
        rooms[name] = await create_room(alice, base, f"{name} {tag}")
        await bob.goto(f"{base}/rooms/{rooms[name]}")
        await bob.click("text=Join room")
    await bob.goto(f"{base}/dm/{alice_name}")
    await bob.click("text=Start the conversation")
    await bob.wait_for_url(f"{base}/rooms/*")
    dm_url = bob.url
    await bob.goto(f"{base}/rooms")
    for name in ("Alpha", "Beta", "Gamma"):
        assert await badge(bob, f"{name} {tag}", "unread") == ""
    assert await bob.locator("#sidebar li[data-kind=direct] .name").text_content() == alice_name
    await bob.wait_for_timeout(300)  # the event stream is up

    await alice.goto(f"{base}/rooms/{rooms['Alpha']}")
    await connected(alice)
    await say(alice, "one")
    await say(alice, "two")
    await alice.goto(f"{base}/rooms/{rooms['Beta']}")
    await connected(alice)
    await say(alice, f"hey @{bob_name}, look")
    await alice.goto(dm_url)
    await connected(alice)
    await say(alice, "a private word")

    async def counted() -> bool:
        return (
            await badge(bob, f"Alpha {tag}", "unread") == "2"
            and await badge(bob, f"Beta {tag}", "unread") == "1"
            and await badge(bob, f"Beta {tag}", "mentions") == "@1"
            and await badge(bob, alice_name, "unread") == "1"
        )

    await eventually(counted, 10, "bob's badges counting alice's messages", interval=0.1)
    # A screen reader hears the numbers with what they count, in each link's name.
    # (was "Alpha … unread": the badge's label replaced its number)
    assert await bob.get_by_role("link", name=re.compile(rf"^Alpha {tag}\s*, 2 unread$")).count() == 1
    assert await bob.get_by_role("link", name=re.compile(rf"^Beta {tag}\s*, 1 mention\s*, 1 unread$")).count() == 1
    assert await badge(bob, f"Gamma {tag}", "unread") == ""
    assert (await bob.title()).startswith("(4) ")
    assert await badge(alice, f"Alpha {tag}", "unread") == ""  # her own messages are read by writing them

    # Reading Alpha in another tab clears it here too; the quick switcher filters.
    reader = await people.bob.context.new_page()
    await reader.goto(f"{base}/rooms/{rooms['Alpha']}")
    await connected(reader)

    async def alpha_read() -> bool:
        return await badge(bob, f"Alpha {tag}", "unread") == "" and (await bob.title()).startswith("(2) ")

    await eventually(alpha_read, 10, "Alpha read in the other tab", interval=0.1)
    assert await reader.locator("#sidebar li a[aria-current=page] .name").text_content() == f"Alpha {tag}"
    await bob.fill("#switcher", "gam")
    assert await bob.locator("#sidebar li[data-room-id]:not(.filtered-out)").count() == 1
    assert people.errors == []
    await people.close()
