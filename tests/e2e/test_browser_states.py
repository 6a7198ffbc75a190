"""The room page always shows its true state, in a real browser against a real server.

The connection (connecting, connected, reconnecting, offline, session ended)
is a banner fixed to the viewport with "Reconnect now"; each own message says
whether it is on its way, waiting for the connection, sent, or not sent and
why; presence is never shown while it cannot be known; the forms say what is
wrong where it is wrong.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import Page, ViewportSize

from tests.support.client import PASSWORD
from tests.support.pages import alone_in_a_room, connected, create_room, record_notices, register, say, two_people
from tests.support.server import ServerFactory
from tests.support.waiting import eventually


async def banner_in_view(page: Page) -> bool:
    """The banner is shown and lies wholly inside the viewport, wherever the page is scrolled."""
    box = await page.locator("#banner").bounding_box()
    size = page.viewport_size
    return box is not None and size is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


async def test_a_server_outage_shows_a_banner_in_view_and_reconnect_now_gets_back_at_once(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "olga", viewport=ViewportSize(width=1366, height=768))
    page = reader.page
    # The focus starts in the message box, and a skip link leads there.
    assert await page.evaluate("document.activeElement.id") == "body"
    assert await page.locator("a.skip-link[href='#body']").count() == 1
    for n in range(30):  # enough to scroll: the room header is far off screen
        await say(page, f"line {n}")
    await page.wait_for_selector("li.message[data-seq='30']")
    # A dense list: one-line messages under one name take a line each, not a card.
    heights = await page.evaluate(
        "() => [...document.querySelectorAll('li.message')].map((li) => li.getBoundingClientRect().height)"
    )
    assert heights[0] <= 84 and max(heights[1:]) <= 26, heights  # the first carries the day and the name
    assert await page.is_hidden("#banner")
    assert await page.is_hidden("#presence-stale")

    await asyncio.to_thread(server.stop)
    await page.wait_for_selector("#room[data-state=reconnecting]")
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert await banner_in_view(page)
    banner = await page.text_content("#banner") or ""
    # When it tries again, or that it is trying (the first wait is under half a second).
    assert "Connection lost" in banner and ("Trying again in" in banner or "Trying now" in banner), banner
    # The countdown ticks outside the live region: a screen reader hears the state once.
    assert "Trying again" not in (await page.text_content("[role=status]#banner-text") or "")
    assert await page.is_visible("#reconnect-now")
    # Who is online cannot be known now: not shown as if it were.
    assert await page.is_visible("#presence-stale")
    assert await page.is_hidden("#presence")
    # A message written now waits, and says so.
    await say(page, "written while down")
    pending = page.locator("li.message.pending", has_text="written while down")
    assert await pending.locator(".status").text_content() == "Waiting for the connection…"

    await asyncio.to_thread(server.start)
    back = time.monotonic()
    # The button's own handler, at once: the page's next automatic try may
    # beat a pointer click (the banner then goes away, as it should), and
    # pressing it while connected does nothing.
    await page.evaluate("document.getElementById('reconnect-now').click()")
    await page.wait_for_selector("#room[data-state=connected]", timeout=15000)
    reconnected_in = time.monotonic() - back
    # Far below the 10 s backoff ceiling even on a loaded CI machine.
    assert reconnected_in < 8, f"Reconnect now took {reconnected_in:.1f} s"
    assert await page.is_hidden("#banner")
    # The waiting message went out on the new connection and is marked sent.
    stored = page.locator("li.message[data-seq='31']", has_text="written while down")
    await stored.locator(".sent-mark").wait_for()
    assert await stored.locator(".status").is_hidden()
    assert await page.locator("li.message.pending").count() == 0
    assert await page.is_visible("#presence") and await page.is_hidden("#presence-stale")
    assert reader.errors == []
    await reader.context.close()


@pytest.mark.parametrize(
    "viewport", [ViewportSize(width=1366, height=768), ViewportSize(width=390, height=844)], ids=["desktop", "phone"]
)
async def test_no_message_hides_behind_the_dock_however_tall_it_grows(
    server_factory: ServerFactory, chromium: Chromium, viewport: ViewportSize
) -> None:
    # The banner, a notice and the message box make the dock tall (a third
    # of a phone's screen); a fixed padding left the newest messages under it.
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "sami", viewport=viewport)
    page = reader.page
    for n in range(20):
        await say(page, f"line {n}")
    await page.wait_for_selector("li.message[data-seq='20'] .sent-mark")
    await asyncio.to_thread(server.stop)
    await page.wait_for_selector("#room[data-state=reconnecting]")
    await say(page, "written while down")
    await page.fill("#body", "a draft\nof three\nlines")

    async def last_message_clear_of_dock() -> bool:
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # as End does
        last = await page.locator("li.message").last.bounding_box()
        dock = await page.locator(".dock").bounding_box()
        return last is not None and dock is not None and last["y"] + last["height"] <= dock["y"] + 1

    await eventually(last_message_clear_of_dock, 5, "the newest message to show above the dock")
    assert await page.locator("li.message").last.text_content() or ""
    await reader.context.close()


async def test_a_paste_over_the_limit_grows_the_box_and_enter_says_what_to_do(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "vera")
    page = reader.page
    two_lines = await page.evaluate("document.getElementById('body').offsetHeight")

    await page.fill("#body", "a long paste " * 400)  # 5,200 characters
    grown = await page.evaluate("document.getElementById('body').offsetHeight")
    assert grown > 2 * two_lines  # it grows (up to its max-height), not a two-line slot
    assert "too many" in (await page.text_content("#body-count") or "")
    await page.keyboard.press("Enter")

    notice = await page.text_content("#notice") or ""
    assert await page.is_visible("#notice") and "split it into shorter messages" in notice, notice
    assert await page.locator("li.message").count() == 0  # nothing sent, nothing lost
    assert (await page.input_value("#body")).startswith("a long paste")

    await page.fill("#body", "a short one")  # fits: the notice goes, the box shrinks
    assert await page.is_hidden("#notice")
    assert await page.evaluate("document.getElementById('body').offsetHeight") == two_lines
    await reader.context.close()


async def test_a_server_that_does_not_answer_is_called_unreachable_never_offline(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    # People told "you are offline" go and check their Wi-Fi; only the
    # browser knows whether it is offline.
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "quinn")
    page = reader.page
    await page.clock.install()  # the backoff's waits pass when the test says
    await asyncio.to_thread(server.stop)
    await page.wait_for_selector("#room[data-state=reconnecting]")

    async def tried_many_times() -> bool:
        # Past the longest backoff: the next try runs, fails at once (nothing
        # listens), and the one after it is scheduled.
        await page.clock.run_for(11_000)
        return await page.get_attribute("#room", "data-state") == "unreachable"

    await eventually(tried_many_times, 30, "the page to give up calling it a blip", interval=0.2)
    banner = await page.text_content("#banner-text") or ""
    assert "Can't reach the server" in banner and "offline" not in banner.lower(), banner
    assert await page.text_content("#connection-state") == "unreachable"
    assert await page.is_visible("#reconnect-now")

    await asyncio.to_thread(server.start)
    await page.evaluate("document.getElementById('reconnect-now').click()")
    await page.wait_for_selector("#room[data-state=connected]", timeout=15000)
    assert reader.errors == []
    await reader.context.close()


async def test_quick_messages_over_the_typing_limit_show_no_error(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    # Each new message starts with a typing notice; over the typing limit
    # those were answered with "Too many requests", shown as if a message had
    # failed while every message was stored.
    server = server_factory(CHAT_LIMIT_TYPING="3 per minute")
    reader = await alone_in_a_room(chromium, server.base_url, "rosa")
    page = reader.page
    await record_notices(page)

    for n in range(8):
        await say(page, f"quick {n}")
    await page.wait_for_selector("li.message[data-seq='8'] .sent-mark")

    assert await page.evaluate("window.noticesShown") == []
    assert await page.locator("li.message.pending").count() == 0
    assert reader.errors == []
    await reader.context.close()


async def test_coming_back_online_or_to_the_tab_reconnects_without_waiting_out_the_backoff(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "pia")
    page, context = reader.page, reader.context

    await context.set_offline(True)
    await asyncio.to_thread(server.restart)  # the socket drops; the browser cannot reach the server
    await page.wait_for_selector("#room[data-state=offline]")
    assert "You are offline" in (await page.text_content("#banner-text") or "")
    await context.set_offline(False)  # fires "online"
    await page.wait_for_selector("#room[data-state=connected]", timeout=3000)

    # Hidden tabs may wait out a long backoff; looking at the tab again tries at once.
    # (The drop may last a moment only: every state the page takes is recorded.)
    await page.evaluate(
        """() => {
            const room = document.getElementById("room");
            window.statesSeen = [];
            new MutationObserver(() => window.statesSeen.push(room.dataset.state))
                .observe(room, { attributes: true, attributeFilter: ["data-state"] });
        }"""
    )
    await asyncio.to_thread(server.restart)

    async def dropped() -> bool:
        return bool(await page.evaluate("window.statesSeen.some((state) => state !== 'connected')"))

    await eventually(dropped, 10, "the page to notice the restart")
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await page.wait_for_selector("#room[data-state=connected]", timeout=3000)
    await context.close()


async def test_a_session_that_ends_says_so_keeps_what_was_written_and_sends_it_after_signing_in(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    reader = await alone_in_a_room(chromium, base, "quinn")
    page, context, room = reader.page, reader.context, reader.room_id
    await say(page, "before signing out")
    await page.wait_for_selector("li.message[data-seq='1'] .sent-mark")

    await record_notices(page)

    # Signing out in another tab ends the session under this page.
    other = await context.new_page()
    await other.goto(f"{base}/rooms")
    await other.click("text=Sign out")
    await other.wait_for_url(f"{base}/login")
    await page.wait_for_selector("#room[data-state=session-ended]")
    assert await banner_in_view(page)
    assert "Your session has ended" in (await page.text_content("#banner-text") or "")
    # Said once, by the banner; and the top bar no longer says who is signed in.
    assert await page.evaluate("window.noticesShown") == []
    assert await page.text_content(".whoami") == "Signed out"
    assert await page.is_hidden("form[action='/logout']")
    assert await page.is_hidden("#reconnect-now")
    sign_in = page.locator("#sign-in-again")
    assert await sign_in.get_attribute("href") == f"/login?next=%2Frooms%2F{room}"

    # What is written now is not lost: it says why it is not sent, and goes after signing in.
    await say(page, "written after the session ended")
    kept = page.locator("li.message.failed", has_text="written after the session ended")
    assert "your session ended" in (await kept.locator(".status").text_content() or "")
    assert await kept.locator(".retry").is_hidden()
    await page.fill("#body", "a draft in the box")
    await sign_in.click()
    await page.wait_for_url(f"{base}/login?next=*")
    await page.fill("input[name=username]", reader.name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/rooms/{room}")
    await connected(page)
    await page.wait_for_selector("li.message[data-seq='2'] >> text=written after the session ended")
    await page.locator("li.message[data-seq='2'] .sent-mark").wait_for()
    assert await page.input_value("#body") == "a draft in the box"
    assert reader.errors == []
    await context.close()


async def test_back_after_signing_out_never_shows_a_live_looking_room(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    reader = await alone_in_a_room(chromium, base, "rosa")
    page, room = reader.page, reader.room_id
    await say(page, "a private thought")
    await page.wait_for_selector("li.message[data-seq='1']")
    await page.click("text=Sign out")
    await page.wait_for_url(f"{base}/login")

    await page.go_back()

    # Either the server is asked again (no-store) and sends the sign-in page,
    # or the browser restores the page from its back-forward cache, which then
    # finds out at once that the session is over and says so.
    async def settled() -> bool:
        if page.url.startswith(f"{base}/login"):
            return True
        return await page.get_attribute("#room", "data-state") == "session-ended"

    await eventually(settled, timeout=10, what="the sign-in page or the session-ended banner")
    if page.url.startswith(f"{base}/rooms/{room}"):
        assert await page.is_visible("#sign-in-again")
    await reader.context.close()


async def test_a_refused_message_says_why_and_can_be_retried_or_discarded(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "sven")
    page = reader.page
    limit = int(await page.get_attribute("#body", "data-max-length") or 0)

    # Past the limit the box counts and refuses; nothing is cut, nothing is sent.
    await page.fill("#body", "x" * (limit + 250))
    counter = page.locator("#body-count")
    assert await counter.text_content() == f"250 characters too many (the limit is {limit:,})"
    assert await page.get_attribute("#body", "aria-invalid") == "true"
    await page.keyboard.press("Enter")
    assert await page.input_value("#body") == "x" * (limit + 250)
    assert await page.locator("li.message").count() == 0
    await page.fill("#body", "x" * (limit - 10))
    assert await counter.text_content() == f"{limit - 10:,} / {limit:,}"
    assert await page.get_attribute("#body", "aria-invalid") is None
    await page.fill("#body", "")
    assert await counter.is_hidden()

    # A refusal the server gives (here a message in a room the reader may no
    # longer write to is simulated by refusing it from the socket's side):
    # the reason in words, with Retry and Discard.
    await page.evaluate(
        """() => {
            const real = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
                const frame = JSON.parse(data);
                if (frame.type === "send" && frame.body === "refuse me" && !window.__refusedOnce) {
                    window.__refusedOnce = true;
                    const error = {type: "error", code: "invalid", message: "This message cannot be sent.",
                                   client_id: frame.client_id};
                    setTimeout(() => this.onmessage({data: JSON.stringify(error)}), 0);
                    return;
                }
                return real.call(this, data);
            };
        }"""
    )
    await say(page, "refuse me")
    failed = page.locator("li.message.failed", has_text="refuse me")
    await failed.wait_for()
    assert await failed.locator(".status").text_content() == "Not sent: This message cannot be sent."
    assert "Message not sent" in (await page.text_content("#announcer") or "")
    await failed.locator("button[data-action=retry]").click()
    await page.wait_for_selector("li.message[data-seq='1'] >> text=refuse me")
    assert await page.locator("li.message.failed").count() == 0

    await page.evaluate("window.__refusedOnce = false")
    await say(page, "refuse me")
    await failed.wait_for()
    await failed.locator("button[data-action=discard]").click()
    assert await page.locator("li.message", has_text="refuse me").count() == 1  # the stored one only
    assert await page.evaluate("document.activeElement.id") == "body"
    assert reader.errors == []
    await reader.context.close()


async def test_presence_drops_who_left_and_new_messages_are_announced_one_by_one(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    people = await two_people(chromium, server.base_url)
    alice, bob = people.alice.page, people.bob.page
    room = await create_room(alice, server.base_url, f"Presence {uuid.uuid4().hex[:4]}")
    await alice.fill("#body", "history before bob")
    await alice.keyboard.press("Enter")
    await alice.wait_for_selector("li.message[data-seq='1'] .sent-mark")
    await bob.goto(f"{server.base_url}/rooms/{room}")
    await connected(alice, bob)
    present = alice.locator(f"#presence li[title='{people.bob.name}']")
    await present.wait_for()
    # History is not read out: the live region starts empty.
    assert (await bob.text_content("#announcer") or "") == ""
    await say(alice, "hello bob")
    await bob.wait_for_selector("#announcer >> text=hello bob")
    assert people.alice.name in (await bob.text_content("#announcer") or "")
    assert "hello bob" not in (await alice.text_content("#announcer") or "")  # not one's own

    await bob.close()
    await present.wait_for(state="detached", timeout=10000)
    assert people.errors == []
    await people.close()


async def test_forms_put_the_servers_message_on_the_field_and_focus_it(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    base = server.base_url
    context = await chromium.new_context()
    page = await context.new_page()
    await page.goto(f"{base}/login")
    # A form page starts in its first field.
    assert await page.evaluate("document.activeElement.id") == "field-username"
    await page.goto(f"{base}/register")
    await page.fill("input[name=username]", "ab")
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=confirm]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#field-username[aria-invalid=true]")
    # The server's words, not the browser's "Please match the requested format".
    error = await page.text_content("#field-username-error") or ""
    assert "Usernames are" in error
    assert await page.evaluate("document.activeElement.id") == "field-username"
    described = await page.get_attribute("#field-username", "aria-describedby") or ""
    assert "field-username-error" in described.split()

    await page.fill("#field-username", "ok_" + uuid.uuid4().hex[:6])
    await page.fill("#field-password", PASSWORD)
    await page.fill("#field-confirm", PASSWORD + "x")
    await page.click("button[type=submit]")
    # Both boxes come back empty: the first one takes the message and the
    # focus (retyping only the second failed again).
    await page.wait_for_selector("#field-password[aria-invalid=true]")
    assert await page.evaluate("document.activeElement.id") == "field-password"
    assert "do not match" in (await page.text_content("#field-password-error") or "")
    assert await page.input_value("#field-password") == await page.input_value("#field-confirm") == ""

    # The most common passwords are refused, by name.
    await page.fill("#field-password", "Password123")
    await page.fill("#field-confirm", "Password123")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#field-password-error >> text=most common")

    # Every field's problem at once, the first one focused: not one per try.
    await page.fill("#field-username", "x")
    await page.fill("#field-password", "short")
    await page.fill("#field-confirm", "short")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#field-password-error >> text=at least")
    assert "Usernames are" in (await page.text_content("#field-username-error") or "")
    assert await page.evaluate("document.activeElement.id") == "field-username"
    assert await page.get_attribute("#field-password", "aria-invalid") == "true"

    # A room name past the limit is not cut: the box counts, the server refuses it by name.
    await register(page, base, f"tara_{uuid.uuid4().hex[:6]}")
    # Elsewhere the first Tab stop skips the navigation.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    long_name = "n" * 70
    await page.fill("#field-name", long_name)
    assert await page.input_value("#field-name") == long_name
    assert "6 characters too many" in (await page.text_content("#field-name-count") or "")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_selector("#field-name-error")
    assert "at most 64" in (await page.text_content("#field-name-error") or "")
    assert await page.evaluate("document.activeElement.id") == "field-name"
    assert await page.input_value("#field-name") == long_name
    await context.close()


async def test_a_reload_keeps_what_was_not_sent_and_the_draft_and_sends_it_once(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory()
    reader = await alone_in_a_room(chromium, server.base_url, "uma")
    page = reader.page
    await asyncio.to_thread(server.stop)
    await page.wait_for_selector("#room[data-state=reconnecting]")
    await say(page, "not sent before the reload")
    await page.fill("#body", "half a thought")

    await asyncio.to_thread(server.start)
    await page.reload()
    await connected(page)
    stored = page.locator("li.message", has_text="not sent before the reload")
    await stored.locator(".sent-mark").wait_for()
    assert await stored.count() == 1  # sent again with its client_id: never stored twice
    assert await page.input_value("#body") == "half a thought"
    assert reader.errors == []
    await reader.context.close()
