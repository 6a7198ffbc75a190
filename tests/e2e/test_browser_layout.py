"""How pages lay out at desktop and phone size, in a real browser: what new users tripped over."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import ViewportSize

from tests.support.pages import alone_in_a_room, connected, create_room, record_notices, register, say, two_people
from tests.support.server import ServerFactory

SIZES = [ViewportSize(width=1366, height=768), ViewportSize(width=390, height=844), ViewportSize(width=320, height=640)]


@pytest.mark.parametrize("viewport", SIZES, ids=["desktop", "phone", "narrow"])
async def test_the_rooms_search_button_keeps_its_word_on_one_line(
    server_factory: ServerFactory, chromium: Chromium, viewport: ViewportSize
) -> None:
    server = server_factory()
    context = await chromium.new_context(viewport=viewport)
    page = await context.new_page()
    await register(page, server.base_url, f"tess_{uuid.uuid4().hex[:6]}")

    # The lines the button's text takes ("Searc" / "h" was two).
    lines = await page.evaluate(
        """() => {
            const range = document.createRange();
            range.selectNodeContents(document.querySelector("form.search button"));
            return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
        }"""
    )
    assert lines == 1
    await context.close()


async def test_a_refused_form_keeps_the_sidebar(server_factory: ServerFactory, chromium: Chromium) -> None:
    # Inviting someone who does not exist answers with the room again and
    # the error under the field: the reader's rooms must not vanish with it.
    server = server_factory()
    context = await chromium.new_context(viewport=SIZES[0])
    page = await context.new_page()
    await register(page, server.base_url, f"uma_{uuid.uuid4().hex[:6]}")
    await page.fill("input[name=name]", f"secret {uuid.uuid4().hex[:4]}")
    await page.check("input[name=private]")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_url(f"{server.base_url}/rooms/*")
    assert await page.is_visible("#sidebar")

    await page.fill("form.invite input[name=username]", f"nobody_{uuid.uuid4().hex[:6]}")
    await page.click("form.invite button[type=submit]")
    await page.wait_for_selector("form.invite [aria-invalid=true], .field-error")

    assert await page.is_visible("#sidebar")
    await context.close()


async def test_inviting_says_it_was_done(server_factory: ServerFactory, chromium: Chromium) -> None:
    server = server_factory()
    base = server.base_url
    people = await two_people(chromium, base)
    alice = people.alice.page
    await alice.fill("input[name=name]", f"plans {uuid.uuid4().hex[:4]}")
    await alice.check("input[name=private]")
    await alice.click("form.create-room button[type=submit]")
    await alice.wait_for_url(f"{base}/rooms/*")

    bob = people.bob.page
    await bob.goto(f"{base}/rooms")
    await bob.wait_for_timeout(300)  # the event stream is up

    await alice.fill("form.invite input[name=username]", people.bob.name)
    await alice.click("form.invite button[type=submit]")

    await alice.wait_for_selector("#room-done[role=status]")
    assert f"{people.bob.name} was invited" in (await alice.text_content("#room-done") or "")
    # Bob's list gains the room, and says so: it used to appear unannounced.
    await bob.wait_for_selector("#sidebar li[data-kind=private] .new-mark")
    said = await bob.text_content("#sidebar [aria-live=polite]") or ""
    assert said.startswith("New in your list: plans"), said
    # A private room's mark is a drawing, not an emoji (a box without an emoji font), and is said.
    private_row = bob.locator("#sidebar li[data-kind=private]")
    assert await private_row.locator("svg.icon").count() == 1
    assert "🔒" not in (await bob.text_content("#sidebar") or "")
    assert "private:" in await private_row.aria_snapshot()
    await bob.reload()  # and the same from the server
    assert await private_row.locator("svg.icon").count() == 1
    assert "private:" in await private_row.aria_snapshot()
    # The confirmation is the page's own word: a link cannot make one up for someone not invited.
    await alice.goto(alice.url.split("?")[0] + "?invited=0123456789abcdef01234567")
    assert await alice.locator("#room-done").count() == 0
    assert people.errors == []
    await people.close()


async def test_removing_or_banning_asks_first_then_says_it_was_done(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    people = await two_people(chromium, base)
    alice, bob = people.alice.page, people.bob.page
    room_id = await create_room(alice, base, f"club {uuid.uuid4().hex[:4]}")
    await bob.goto(f"{base}/rooms/{room_id}")
    await bob.click("text=Join room")
    await connected(bob)
    await record_notices(bob)

    await alice.goto(f"{base}/rooms/{room_id}")
    await alice.click("summary:has-text('Members')")
    row = alice.locator(f".members li:has-text('{people.bob.name}')")
    await row.locator("button:has-text('Remove')").click()
    # One click on a list of names no longer acts: it asks.
    await alice.wait_for_selector(f"h1:has-text('Remove {people.bob.name}')")
    await alice.click("text=Cancel")
    await alice.wait_for_url(f"{base}/rooms/{room_id}")
    assert await alice.locator(f".members li:has-text('{people.bob.name}')").count() == 1

    await alice.click("summary:has-text('Members')")
    await row.locator("button:has-text('Ban')").click()
    await alice.click(f"button:has-text('Ban {people.bob.name}')")
    await alice.wait_for_selector("#room-done[role=status]")
    assert f"{people.bob.name} was banned" in (await alice.text_content("#room-done") or "")

    # Bob is told once, by the banner: not also by a notice saying the same.
    await bob.wait_for_selector("#room[data-state=removed]")
    assert await bob.evaluate("window.noticesShown") == []
    assert people.errors == []
    await people.close()


async def test_a_message_under_the_same_name_still_names_its_author_to_a_screen_reader(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "wendy")
    page = reader.page
    await say(page, "first")
    await say(page, "second, under the same name")
    await page.wait_for_selector("li.message.continued[data-seq='2']")

    # Shown once, on the first; in the accessibility tree on both.
    second = page.locator("li.message[data-seq='2']")
    assert reader.name in await second.aria_snapshot()
    assert (await second.locator(".author").bounding_box() or {"width": 0})["width"] <= 1
    await reader.context.close()


async def test_the_message_list_is_one_tab_stop_and_the_arrow_keys_move_in_it(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "xena")
    page = reader.page
    for n in range(5):
        await say(page, f"line {n}")
    await page.wait_for_selector("li.message[data-seq='5'] .sent-mark")

    # Every own message has Edit and Delete: still one stop for the whole list.
    stops = """() => [...document.querySelectorAll('#messages li, #messages button')]
        .filter((el) => el.tabIndex >= 0 && !el.closest('[hidden]')).length"""
    assert await page.evaluate(stops) == 1
    await page.focus("li.message[data-seq='5']")
    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("ArrowUp")
    assert await page.evaluate("document.activeElement.dataset.seq") == "3"
    await page.keyboard.press("Tab")  # into the focused message's own buttons
    assert await page.evaluate("document.activeElement.textContent") == "Edit"
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("End")
    assert await page.evaluate("document.activeElement.dataset.seq") == "5"
    assert await page.evaluate(stops) == 1 + 2  # the focused message's Edit and Delete join, no others
    assert reader.errors == []
    await reader.context.close()
