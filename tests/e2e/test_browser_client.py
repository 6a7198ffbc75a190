"""static/chat.js on the real room page, fed frames by the test through a scripted WebSocket.

The page, its history and its config come from a real server; only the socket
is replaced, so the test decides which frames arrive, in which order, and how
the connection closes (things a live server will not do on demand).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from playwright.async_api import Browser as Chromium

from chat.services.conversation.messages import MAX_BODY_LENGTH
from chat.web.rendering import GROUP_WITHIN
from chat.wire.client import FETCH_DEFAULT_LIMIT
from chat.wire.refusals import Close
from tests.support.pages import create_room, register, say
from tests.support.server import ServerFactory
from tests.support.waiting import eventually

# Replaces window.WebSocket before any page script runs. Every room socket the
# page opens is kept in window.__sockets with the frames it sent.
SCRIPTED_WEBSOCKET = """
window.__sockets = [];
const RealWebSocket = window.WebSocket;
class ScriptedSocket {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor(url) {
    // The sidebar's event stream is real (test_browser_sidebar.py follows it); room sockets are scripted.
    if (url.endsWith("/events/ws")) return new RealWebSocket(url);
    this.url = url; this.readyState = 0; this.sent = []; window.__sockets.push(this);
  }
  // Typing notices and read markers are not what these tests follow (other tests do).
  send(data) { const frame = JSON.parse(data); if (!["typing", "read"].includes(frame.type)) this.sent.push(frame); }
  close() {}
  deliver(frame) { this.readyState = 1; this.onmessage({ data: JSON.stringify(frame) }); }
  drop(code) { this.readyState = 3; this.onclose({ code }); }
}
window.WebSocket = ScriptedSocket;
"""


def stored(seq: int, body: str, user_id: str = "someone-else", client_id: str | None = None) -> dict[str, Any]:
    return {
        "id": f"id{seq}",
        "room_id": "r",
        "seq": seq,
        "user_id": user_id,
        "username": "other",
        "body": body,
        "created_at": "2026-11-27T07:41:37.123Z",
        "client_id": client_id or uuid.uuid4().hex,
    }


async def test_the_client_orders_acks_retries_and_reconnects_as_the_protocol_says(
    server_factory: ServerFactory,
    chromium: Chromium,
) -> None:
    server = server_factory()
    context = await chromium.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Two messages stored for real, so the page renders them server-side.
    await register(page, server.base_url, f"carol_{uuid.uuid4().hex[:6]}")
    await page.fill("input[name=name]", f"Scripted {uuid.uuid4().hex[:4]}")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_selector("#connection-state.state-connected")
    for text in ("first", "second"):
        await say(page, text)
        await page.wait_for_selector(f"li.message:not(.pending) >> text={text}")
    await context.add_init_script(SCRIPTED_WEBSOCKET)
    await page.reload()
    user_id = await page.get_attribute("#room", "data-user-id")

    async def socket_count() -> int:
        return await page.evaluate("window.__sockets.length")

    async def deliver(frame: dict[str, Any], socket: int = -1) -> None:
        await page.evaluate("([i, f]) => window.__sockets.at(i).deliver(f)", [socket, frame])

    async def sent(socket: int = -1) -> list[dict[str, Any]]:
        return await page.evaluate("i => window.__sockets.at(i).sent", socket)

    async def seqs() -> list[str | None]:
        return await page.locator("#messages li.message").evaluate_all("els => els.map(e => e.dataset.seq ?? null)")

    # The limits come from the server, and the page resumes after its history.
    config = json.loads(await page.get_attribute("#room", "data-config") or "")
    assert config == {
        "maxBodyLength": MAX_BODY_LENGTH,
        "fetchLimit": FETCH_DEFAULT_LIMIT,
        "groupWithinSeconds": int(GROUP_WITHIN.total_seconds()),
        "close": {
            "sessionEnded": Close.SESSION_ENDED,
            "goingAway": Close.GOING_AWAY,
            "tryAgainLater": Close.TRY_AGAIN_LATER,
            "removed": Close.REMOVED,
        },
    }
    # Counted, never cut: no maxlength, the limit for the counter (static/forms.js).
    assert await page.get_attribute("#body", "maxlength") is None
    assert await page.get_attribute("#body", "data-max-length") == str(MAX_BODY_LENGTH)
    assert await page.evaluate("window.__sockets[0].url.endsWith('/ws?since=2&rev=0')")
    await deliver({"type": "hello", "instance": "scripted:1", "last_seq": 2, "room": {}, "user": {}})
    await page.wait_for_selector("#room[data-state=connected][data-instance='scripted:1']")

    # Out-of-order frames land in seq order; a pending own message stays last.
    await say(page, "mine")
    (mine,) = await sent()
    assert mine["type"] == "send" and mine["body"] == "mine"
    for seq in (5, 3, 7, 4):
        await deliver({"type": "message", "message": stored(seq, f"m{seq}")})
    assert await seqs() == ["1", "2", "3", "4", "5", "7", None]
    assert await page.locator("li.message.pending >> text=mine").count() == 1

    # The ack replaces the pending element; the later broadcast is a duplicate.
    acked = stored(6, "mine", user_id=user_id or "", client_id=mine["client_id"])
    await deliver({"type": "ack", "client_id": mine["client_id"], "message": acked})
    await deliver({"type": "message", "message": acked})
    assert await seqs() == ["1", "2", "3", "4", "5", "6", "7"]
    assert await page.locator("li.message.pending").count() == 0

    # A full history page, with overlap, in one frame.
    await deliver({"type": "history", "has_more": False, "messages": [stored(s, f"h{s}") for s in range(5, 505)]})
    assert await seqs() == [str(s) for s in range(1, 505)]

    # rate_limited waits retry_after (plus jitter under a second), then re-sends the same client_id.
    await say(page, "limited")
    limited = (await sent())[-1]
    await deliver(
        {
            "type": "error",
            "code": "rate_limited",
            "message": "Slow down",
            "client_id": limited["client_id"],
            "retry_after": 0.1,
        }
    )
    assert await page.text_content("#notice") == "Slow down"

    async def resent() -> bool:
        return [f["client_id"] for f in await sent()].count(limited["client_id"]) == 2

    await eventually(resent, timeout=1.5, what="the rate-limited message re-sent")

    # A refused message is kept in view, marked failed, and not re-sent.
    await say(page, "refused")
    refused = (await sent())[-1]
    await deliver({"type": "error", "code": "too_large", "message": "Too long", "client_id": refused["client_id"]})
    failed = page.locator("li.message.failed", has_text="refused")
    assert await failed.count() == 1
    assert await failed.locator(".status").text_content() == "Not sent: Too long"
    assert await failed.locator("button[data-action=retry]").is_visible()

    # Any other close reconnects with backoff, resumes after the last seq and re-sends what is unacked.
    await page.evaluate(f"window.__sockets.at(-1).drop({int(Close.TRY_AGAIN_LATER)})")
    await page.wait_for_selector("#room[data-state=reconnecting]")

    async def reconnected() -> bool:
        return await socket_count() == 2

    await eventually(reconnected, what="a second socket")
    assert await page.evaluate("window.__sockets[1].url.endsWith('/ws?since=504&rev=0')")
    await deliver({"type": "hello", "instance": "scripted:2", "last_seq": 504, "room": {}, "user": {}})
    assert [f["client_id"] for f in await sent()] == [limited["client_id"]]
    await page.wait_for_selector("#room[data-state=connected][data-instance='scripted:2']")
    assert await page.is_hidden("#notice")

    # The browser coming back online reconnects at once, without waiting out the backoff.
    await page.evaluate("window.__sockets.at(-1).drop(1006)")
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    assert await socket_count() == 3

    # The session-ended close code stops reconnecting for good.
    await page.evaluate(f"window.__sockets.at(-1).drop({int(Close.SESSION_ENDED)})")
    await page.wait_for_selector("#room[data-state=session-ended]")
    assert "session has ended" in (await page.text_content("#banner-text") or "")
    assert await page.is_visible("#sign-in-again")
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await asyncio.sleep(1)
    assert await socket_count() == 3

    assert errors == []
    await context.close()


async def test_a_reset_reloads_the_page_and_keeps_what_was_not_sent_yet(
    server_factory: ServerFactory,
    chromium: Chromium,
) -> None:
    server = server_factory()
    context = await chromium.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await register(page, server.base_url, f"dora_{uuid.uuid4().hex[:6]}")
    await page.fill("input[name=name]", f"Reset {uuid.uuid4().hex[:4]}")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_selector("#connection-state.state-connected")
    await context.add_init_script(SCRIPTED_WEBSOCKET)
    await page.reload()

    async def deliver(frame: dict[str, Any]) -> None:
        await page.evaluate("f => window.__sockets.at(-1).deliver(f)", frame)

    hello = {"type": "hello", "instance": "scripted:1", "last_seq": 0, "room": {}, "user": {}}
    await deliver(hello)
    await page.wait_for_selector("#room[data-state=connected]")
    await say(page, "not stored yet")
    (unsent,) = await page.evaluate("window.__sockets.at(-1).sent")
    await page.fill("#body", "half written")

    # Resuming from too far back: the server says reset, and the page reloads.
    async with page.expect_navigation():
        await deliver({"type": "history", "messages": [], "has_more": False, "reset": True})

    await page.wait_for_selector("li.message.pending >> text=not stored yet")
    assert await page.input_value("#body") == "half written"
    await deliver(hello)
    await eventually(
        lambda: page.evaluate("window.__sockets.at(-1).sent.length === 1"), 5, "the unsent message sent again"
    )
    (again,) = await page.evaluate("window.__sockets.at(-1).sent")
    assert again == unsent  # the same client_id: stored at most once
    assert errors == []
    await context.close()


async def test_revisions_keep_the_newest_version_even_when_they_overtake_their_message(
    server_factory: ServerFactory,
    chromium: Chromium,
) -> None:
    server = server_factory()
    context = await chromium.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await register(page, server.base_url, f"erin_{uuid.uuid4().hex[:6]}")
    await create_room(page, server.base_url, f"Revisions {uuid.uuid4().hex[:4]}")
    await context.add_init_script(SCRIPTED_WEBSOCKET)
    await page.reload()

    async def deliver(frame: dict[str, Any]) -> None:
        await page.evaluate("f => window.__sockets.at(-1).deliver(f)", frame)

    def revised(seq: int, body: str, rev: int, deleted: bool = False) -> dict[str, Any]:
        message = stored(seq, body) | {"rev": rev, "edited_at": "2026-11-27T07:45:00.000Z"}
        return message | ({"body": "", "deleted_at": "2026-11-27T07:46:00.000Z"} if deleted else {})

    async def shown(seq: int) -> str | None:
        return await page.text_content(f"li.message[data-seq='{seq}'] .body")

    await deliver({"type": "hello", "instance": "scripted:1", "last_seq": 0, "room": {}, "user": {}})
    await deliver({"type": "history", "has_more": False, "messages": [stored(1, "helo")]})
    await deliver({"type": "message_updated", "message": revised(1, "hello", 2)})
    assert await shown(1) == "hello"
    assert await page.is_visible("li.message[data-seq='1'] .edited")
    # An older revision arriving late changes nothing.
    await deliver({"type": "message_updated", "message": revised(1, "hel", 1)})
    assert await shown(1) == "hello"

    # An edit that overtakes its message is kept, and wins over the original when it comes.
    await deliver({"type": "message_updated", "message": revised(2, "fixed before seen", 3)})
    assert await page.locator("li.message[data-seq='2']").count() == 0
    await deliver({"type": "message", "message": stored(2, "original")})
    assert await shown(2) == "fixed before seen"

    # A resume's updates: a deletion keeps the place; the cursor moves to last_rev.
    await deliver({"type": "updates", "messages": [revised(1, "", 4, deleted=True)], "last_rev": 4})
    assert await shown(1) == "message deleted"
    assert await page.locator("li.message").count() == 2
    await page.evaluate("window.__sockets.at(-1).drop(1006)")
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    assert await page.evaluate("window.__sockets.at(-1).url.endsWith('/ws?since=2&rev=4')")

    assert errors == []
    await context.close()


async def test_messages_are_grouped_and_dated_in_the_readers_time_zone(
    server_factory: ServerFactory,
    chromium: Chromium,
) -> None:
    server = server_factory()
    # Tokyo is UTC+9: 14:50Z and 15:10Z fall on two days there, one day in UTC.
    context = await chromium.new_context(timezone_id="Asia/Tokyo", locale="en-GB")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await register(page, server.base_url, f"fay_{uuid.uuid4().hex[:6]}")
    await create_room(page, server.base_url, f"Days {uuid.uuid4().hex[:4]}")
    room_url = page.url
    await page.goto(f"{server.base_url}/rooms")
    created = page.locator("table.rooms time").first
    assert "UTC" not in (await created.text_content() or "")  # local, not the server's UTC
    assert await created.get_attribute("title")
    await context.add_init_script(SCRIPTED_WEBSOCKET)
    await page.goto(room_url)
    await page.wait_for_selector("#room[data-state=connecting]")

    def at(seq: int, when: str, user_id: str) -> dict[str, Any]:
        return stored(seq, f"m{seq}", user_id=user_id) | {"created_at": when}

    await page.evaluate(
        "f => window.__sockets.at(-1).deliver(f)",
        {"type": "hello", "instance": "scripted:1", "last_seq": 0, "room": {}, "user": {}},
    )
    await page.evaluate(
        "f => window.__sockets.at(-1).deliver(f)",
        {
            "type": "history",
            "has_more": False,
            "messages": [
                at(1, "2026-11-27T14:40:00.000Z", "ann"),
                at(2, "2026-11-27T14:41:00.000Z", "ann"),  # a minute later: under ann's name
                at(3, "2026-11-27T14:50:00.000Z", "ann"),  # nine minutes later: named again
                at(4, "2026-11-27T14:51:00.000Z", "ben"),  # someone else
                at(5, "2026-11-27T15:10:00.000Z", "ben"),  # past midnight in Tokyo: a new day
            ],
        },
    )
    rows = await page.locator("#messages li.message").evaluate_all(
        """els => els.map(e => [e.classList.contains("continued"),
                               e.querySelector(".day").hidden ? null : e.querySelector(".day").textContent,
                               e.querySelector("time").title])"""
    )
    assert [continued for continued, _, _ in rows] == [False, True, False, False, False]
    days = [day for _, day, _ in rows]
    assert days[1:4] == [None, None, None] and days[0] and days[4] and days[0] != days[4]
    assert "27" in days[0] and "28" in days[4]  # Tokyo's dates
    assert "28 November 2026" in rows[4][2]  # the full local date on hover
    assert errors == []
    await context.close()
