"""Scroll-back: reading a room's history back to its first message, over the socket and as plain pages."""

from __future__ import annotations

import re

import pytest

from tests.support.client import Browser
from tests.support.server import Server
from tests.support.storage import seed_messages

TOTAL = 1000


async def room_of(browser: Browser, chat_server: Server, count: int) -> str:
    username = await browser.register()
    room_id = await browser.create_room()
    await seed_messages(chat_server.database_url, username, room_id, (f"m{i}" for i in range(1, count + 1)))
    return room_id


@pytest.fixture
async def long_room(browser: Browser, chat_server: Server) -> str:
    return await room_of(browser, chat_server, TOTAL)


@pytest.fixture
async def short_room(browser: Browser, chat_server: Server) -> str:
    """Enough history for the refusals: they never page through it."""
    return await room_of(browser, chat_server, 5)


async def test_fetch_scrolls_back_through_1000_messages_to_the_first(browser: Browser, long_room: str) -> None:
    sock = await browser.socket(long_room)
    _, latest = await sock.join()
    shown = [m["seq"] for m in latest["messages"]]
    assert shown == list(range(TOTAL - 49, TOTAL + 1)) and latest["has_more"] is True

    pages = 0
    has_more = True
    while has_more:
        await sock.send_json({"type": "fetch", "before": shown[0], "limit": 100})
        page = await sock.recv_type("history")
        assert page["before"] == shown[0]
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == list(range(shown[0] - len(seqs), shown[0]))  # just before, ascending
        assert all(m["body"] == f"m{m['seq']}" for m in page["messages"])
        shown = seqs + shown
        has_more = page["has_more"]
        pages += 1

    assert shown == list(range(1, TOTAL + 1))
    assert pages == 10
    # Nothing older than the first: an empty answer, and no more.
    await sock.send_json({"type": "fetch", "before": 1})
    first = await sock.recv_type("history")
    assert (first["messages"], first["has_more"], first["before"]) == ([], False, 1)


async def test_fetch_never_hands_out_messages_ahead_of_the_live_stream(browser: Browser, long_room: str) -> None:
    sock = await browser.socket(long_room)
    await sock.join()

    await sock.send_json({"type": "fetch", "before": 2**53 - 1, "limit": 3})
    page = await sock.recv_type("history")

    assert [m["seq"] for m in page["messages"]] == [TOTAL - 2, TOTAL - 1, TOTAL]
    assert page["before"] == TOTAL + 1


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "fetch"},
        {"type": "fetch", "before": 0},
        {"type": "fetch", "before": -5},
        {"type": "fetch", "before": "10"},
        {"type": "fetch", "before": 10, "limit": 101},
        {"type": "fetch", "before": 10, "limit": 0},
        {"type": "fetch", "before": 10, "limit": True},
        {"type": "fetch", "before": 10, "after": 3},
    ],
)
async def test_a_bad_fetch_is_a_bad_request_and_the_socket_keeps_working(
    browser: Browser, short_room: str, frame: dict[str, object]
) -> None:
    sock = await browser.socket(short_room)
    await sock.join()

    await sock.send_json({**frame, "client_id": "f1"})
    error = await sock.recv_type("error")
    assert (error["code"], error["client_id"]) == ("bad_request", "f1")

    await sock.send_json({"type": "fetch", "before": 3})
    assert [m["seq"] for m in (await sock.recv_type("history"))["messages"]] == [1, 2]


def seqs_on(page: str) -> list[int]:
    return [int(seq) for seq in re.findall(r'<li class="message[^"]*"[^>]*data-seq="(\d+)"', page)]


async def test_older_messages_page_back_to_the_first_without_javascript(browser: Browser, long_room: str) -> None:
    path = f"/rooms/{long_room}"
    seen: list[int] = []
    pages = 0
    while path:
        page = (await browser.get(path)).body.decode()
        seqs = seqs_on(page)
        assert seqs == sorted(seqs) and len(seqs) == 50
        seen = seqs + seen
        older = re.search(r'<a id="older" class="older" href="([^"]+)"', page)
        path = older.group(1).replace("&amp;", "&") if older else ""
        if pages:  # an older page: for reading, with the way back
            assert 'data-archive="true"' in page and 'id="composer"' not in page
            assert f'href="/rooms/{long_room}">Back to the latest messages' in page
        pages += 1

    assert seen == list(range(1, TOTAL + 1))
    assert pages == TOTAL // 50


@pytest.mark.parametrize("before", ["0", "-1", "abc", "1e3", "9" * 40, ""])
async def test_a_bad_before_is_a_400_page(browser: Browser, short_room: str, before: str) -> None:
    response = await browser.get(f"/rooms/{short_room}?before={before}")
    assert response.code == 400
