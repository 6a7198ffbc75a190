"""Sessions that really end, and abuse limits, against a real server process.

Each test starts a server with the limit or timeout under test set tight
(everything else lifted, as on the shared servers), and acts as a person or
an attacker would: through the pages and the room socket.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

from tornado.httpclient import HTTPResponse

from chat.models import NewMessage
from tests.support.client import PASSWORD, Browser, handshake_status
from tests.support.server import Server, ServerFactory
from tests.support.storage import connected_storage
from tests.support.waiting import eventually

OpenBrowser = Callable[[str], Browser]


async def signed_in(server: Server, open_browser: OpenBrowser) -> tuple[Browser, str, str]:
    """A registered, signed-in browser with a room of its own: (browser, username, room_id)."""
    browser = open_browser(server.base_url)
    username = await browser.register()
    return browser, username, await browser.create_room()


async def second_session(server: Server, open_browser: OpenBrowser, username: str) -> Browser:
    other = open_browser(server.base_url)
    response = await other.login(username)
    assert response.code == 302, response.code
    return other


def audit_lines(server: Server, event: str) -> list[str]:
    return [line for line in server.logs().splitlines() if "chat.audit" in line and f" {event} " in line]


# -- sessions that end -------------------------------------------------------------


async def test_signing_out_closes_the_open_sockets_of_that_session_within_a_second(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory()
    browser, username, room_id = await signed_in(server, open_browser)
    first, second = await browser.socket(room_id), await browser.socket(room_id)
    await first.join()
    await second.join()
    stream = await browser.events()  # the sidebar's event stream belongs to the session too
    await stream.skip_to("badges")
    elsewhere = await second_session(server, open_browser, username)
    kept = await elsewhere.socket(room_id)
    await kept.join()
    kept_stream = await elsewhere.events()
    await kept_stream.skip_to("badges")

    started = time.monotonic()
    await browser.logout()
    closes = await asyncio.gather(first.closed(timeout=5), second.closed(timeout=5), stream.closed(timeout=5))
    elapsed = time.monotonic() - started

    assert closes == [1008, 1008, 1008] and elapsed < 1.0, (closes, elapsed)
    assert kept.conn.close_code is None and kept_stream.conn.close_code is None  # the other session is untouched
    await kept.acked(await kept.send_message("still here"))
    assert len(audit_lines(server, "session_ended")) == 1


async def test_signing_out_everywhere_else_ends_the_other_sessions_pages_and_sockets(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory()
    browser, username, room_id = await signed_in(server, open_browser)
    elsewhere = await second_session(server, open_browser, username)
    sock = await elsewhere.socket(room_id)
    await sock.join()
    stream = await elsewhere.events()
    await stream.skip_to("badges")

    response = await browser.post("/account/sign-out-others", {})

    assert response.code == 200 and b"1 other session was signed out" in response.body
    assert await sock.closed(timeout=2) == 1008
    assert await stream.closed(timeout=2) == 1008
    assert (await elsewhere.get("/rooms")).code == 302  # to the sign-in page
    assert (await browser.get("/rooms")).code == 200


async def test_changing_the_password_ends_the_other_sessions_and_needs_the_current_one(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory()
    browser, username, room_id = await signed_in(server, open_browser)
    elsewhere = await second_session(server, open_browser, username)
    sock = await elsewhere.socket(room_id)
    await sock.join()
    stream = await elsewhere.events()
    await stream.skip_to("badges")
    new = "a brand new passphrase"

    wrong = await browser.post("/account/password", {"current": "not it", "password": new, "confirm": new})
    assert wrong.code == 400 and b"not your current password" in wrong.body
    assert sock.conn.close_code is None

    changed = await browser.post("/account/password", {"current": PASSWORD, "password": new, "confirm": new})
    assert changed.code == 200 and b"Password changed" in changed.body
    assert await sock.closed(timeout=2) == 1008
    assert await stream.closed(timeout=2) == 1008
    assert (await browser.get("/rooms")).code == 200
    assert (await open_browser(server.base_url).login(username, new)).code == 302
    assert (await open_browser(server.base_url).login(username, PASSWORD)).code == 400


async def test_an_idle_session_ends_and_so_does_a_socket_that_only_reads(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_SESSION_IDLE_SECONDS="2", CHAT_SESSION_RECHECK_SECONDS="1")
    browser, _, room_id = await signed_in(server, open_browser)
    sock = await browser.socket(room_id)
    await sock.join()
    stream = await browser.events()
    await stream.skip_to("badges")

    # Nobody does anything: the periodic re-check finds the session idle.
    assert await sock.closed(timeout=6) == 1008
    assert await stream.closed(timeout=2) == 1008
    assert (await browser.get("/rooms")).code == 302


async def test_activity_cannot_keep_a_session_past_its_absolute_end(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_SESSION_MAX_AGE="3", CHAT_SESSION_IDLE_SECONDS="600")
    browser, _, _ = await signed_in(server, open_browser)
    started = time.monotonic()

    while time.monotonic() - started < 2.5:
        assert (await browser.get("/rooms")).code == 200
        await asyncio.sleep(0.25)  # a busy person: a page every quarter second
    await asyncio.sleep(0.6)

    assert (await browser.get("/rooms")).code == 302


# -- abuse limits ------------------------------------------------------------------


async def test_the_send_limit_is_per_user_across_every_socket(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="5 per minute")
    browser, _, room_id = await signed_in(server, open_browser)
    sockets = [await browser.socket(room_id) for _ in range(2)]
    for sock in sockets:
        await sock.join()

    sent = {sock: [await sock.send_message(f"m{i}") for i in range(4)] for sock in sockets}
    frames = [frame for sock, client_ids in sent.items() for frame in await sock.answers(client_ids)]
    acked = sum(frame["type"] == "ack" for frame in frames)
    refused = [frame for frame in frames if frame["type"] == "error"]

    assert acked == 5
    assert [f["code"] for f in refused] == ["rate_limited"] * 3
    assert all(isinstance(f["retry_after"], float) and f["retry_after"] > 0 for f in refused)
    assert audit_lines(server, "limit_hit")


async def test_a_user_can_hold_only_so_many_sockets(server_factory: ServerFactory, open_browser: OpenBrowser) -> None:
    server = server_factory(CHAT_MAX_SOCKETS_PER_USER="2")
    browser, _, room_id = await signed_in(server, open_browser)
    first = await browser.socket(room_id)
    await first.join()
    await (await browser.socket(room_id)).join()

    assert await handshake_status(browser, room_id) == 429

    first.close()

    async def admitted() -> bool:
        return await handshake_status(browser, room_id) == 101

    await eventually(admitted, 5, "a place freed by the closed socket")


async def test_room_creation_is_limited_per_user_with_a_429_and_retry_after(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_ROOM_CREATION="2 per hour")
    browser, _, _ = await signed_in(server, open_browser)
    await browser.create_room()

    refused = await browser.post("/rooms", {"name": "one too many"})

    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0
    assert b"Too many requests" in refused.body


async def test_renames_topics_and_new_direct_conversations_are_limited_per_user(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_ROOM_CHANGES="3 per hour", CHAT_LIMIT_DM_CREATION="2 per hour")
    browser, _, room_id = await signed_in(server, open_browser)
    others = [await open_browser(server.base_url).register() for _ in range(3)]

    changes = [
        await browser.post(f"/rooms/{room_id}/rename", {"name": "renamed once"}),
        await browser.post(f"/rooms/{room_id}/topic", {"topic": "a topic"}),
        await browser.post(f"/rooms/{room_id}/rename", {"name": "renamed twice"}),
        await browser.post(f"/rooms/{room_id}/topic", {"topic": "one too many"}),
    ]
    assert [response.code for response in changes] == [302, 302, 302, 429]
    assert int(changes[-1].headers["Retry-After"]) > 0
    assert "one too many" not in (await browser.get(f"/rooms/{room_id}")).body.decode()

    started = [await browser.post(f"/dm/{name}", {}) for name in others]
    assert [response.code for response in started] == [302, 302, 429]
    # Opening one that exists is not starting one.
    assert (await browser.post(f"/dm/{others[0]}", {})).code == 302
    assert (await browser.get(f"/dm/{others[2]}")).code == 200  # still only offered


async def test_registrations_from_one_address_are_limited(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_REGISTRATIONS="2 per hour")
    for _ in range(2):
        await open_browser(server.base_url).register()

    refused = await open_browser(server.base_url).post(
        "/register", {"username": "one_more", "password": PASSWORD, "confirm": PASSWORD}
    )

    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0


async def test_ipv6_clients_are_counted_by_their_64_for_registrations_and_sign_ins(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    # The test server trusts loopback as its proxy, so the forwarded address is the client's.
    server = server_factory(CHAT_LIMIT_REGISTRATIONS="10 per hour", CHAT_LIMIT_LOGINS="5 per minute")

    async def post_from(address: str, path: str, form: dict[str, str]) -> int:
        visitor = open_browser(server.base_url)
        await visitor.get(path)  # the form's XSRF cookie
        body = urlencode({**form, "_xsrf": visitor.xsrf_token() or ""})
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": address}
        return (await visitor.request("POST", path, body=body, headers=headers)).code

    def registration() -> dict[str, str]:
        return {"username": f"v6_{uuid.uuid4().hex[:8]}", "password": PASSWORD, "confirm": PASSWORD}

    # 12 addresses of one /64, then one of another /64 (another client).
    codes = [await post_from(f"2001:db8:7:1:{i:x}::1", "/register", registration()) for i in range(12)]
    assert codes == [302] * 10 + [429, 429]
    assert await post_from("2001:db8:7:2::1", "/register", registration()) == 302

    guess = {"username": "nobody_v6", "password": "guess"}
    codes = [await post_from(f"2001:db8:9:1::{i:x}", "/login", guess) for i in range(1, 7)]
    assert codes == [400] * 5 + [429]


def form_error(response: HTTPResponse) -> str:
    match = re.search(r'<p class="form-error"[^>]*>(.*?)</p>', response.body.decode(), re.S)
    return match.group(1).strip() if match else ""


async def test_a_locked_account_answers_the_right_password_exactly_like_a_wrong_one(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_LOGIN_FAILURES="3 per 15 minutes")
    _, username, _ = await signed_in(server, open_browser)
    attacker = open_browser(server.base_url)
    wrong = [await attacker.login(username, "guess number one") for _ in range(3)]

    locked = await attacker.login(username, PASSWORD)
    unknown = await attacker.login("nobody_here", PASSWORD)

    answers = [*wrong, locked, unknown]
    assert {r.code for r in answers} == {400}
    assert {form_error(r) for r in answers} == {"Wrong username or password."}
    assert not any("Location" in r.headers or "Retry-After" in r.headers for r in answers)
    assert any("reason=locked" in line for line in audit_lines(server, "sign_in_failed"))
    assert PASSWORD not in server.logs()


async def test_sign_ins_sent_all_at_once_cannot_get_past_the_lock(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_LOGIN_FAILURES="10 per 15 minutes")
    _, username, _ = await signed_in(server, open_browser)
    attacker = open_browser(server.base_url)
    for _ in range(9):
        assert (await attacker.login(username, "guess")).code == 400

    burst = [attacker.login(username, f"guess {i}") for i in range(6)] + [attacker.login(username, PASSWORD)]
    answers = await asyncio.gather(*burst)

    # One check was left before the lock: at most one of the seven was checked.
    checked = [line for line in audit_lines(server, "sign_in_failed") if "reason=wrong" in line]
    signed_in_now = [r for r in answers if r.code == 302]
    assert len(checked) - 9 + len(signed_in_now) <= 1
    assert len([line for line in audit_lines(server, "sign_in_failed") if "reason=locked" in line]) >= 6


async def test_the_current_password_cannot_be_guessed_through_the_password_form(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    # A stolen session cookie must not be a way to find the password.
    server = server_factory(CHAT_LIMIT_LOGIN_FAILURES="10 per 15 minutes")
    browser, username, _ = await signed_in(server, open_browser)
    new = "a brand new passphrase"
    for i in range(10):
        guess = await browser.post("/account/password", {"current": f"guess {i}", "password": new, "confirm": new})
        assert guess.code == 400

    right = await browser.post("/account/password", {"current": PASSWORD, "password": new, "confirm": new})

    assert right.code == 400 and b"not your current password" in right.body  # locked, answered as wrong
    assert (await open_browser(server.base_url).login(username, new)).code == 400
    assert any("reason=locked" in line for line in audit_lines(server, "password_check_failed"))


async def test_password_form_attempts_count_against_the_address(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_LOGINS="3 per minute")
    browser, _, _ = await signed_in(server, open_browser)
    new = "a brand new passphrase"
    answers = [
        await browser.post("/account/password", {"current": f"guess {i}", "password": new, "confirm": new})
        for i in range(4)
    ]
    assert [r.code for r in answers] == [400, 400, 400, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0


async def test_a_flood_of_refused_frames_writes_a_line_not_a_line_each(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_TYPING="10 per 30 seconds")
    browser, _, room_id = await signed_in(server, open_browser)
    sock = await browser.socket(room_id)
    await sock.join()
    for _ in range(3000):
        await sock.send_json({"type": "typing"})
    await sock.acked(await sock.send_message("after the flood"), timeout=30)  # frames are handled in order

    assert len(audit_lines(server, "limit_hit")) == 1
    assert len(server.logs().splitlines()) < 100


async def test_sign_in_attempts_from_one_address_are_limited(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_LIMIT_LOGINS="3 per minute")
    client = open_browser(server.base_url)
    for i in range(3):
        assert (await client.login(f"nobody{i}", "whatever pw")).code == 400

    refused = await client.login("nobody3", "whatever pw")

    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0


# -- bounded resume ------------------------------------------------------------------


async def test_a_resume_from_too_far_back_gets_a_reset_and_a_near_one_its_messages(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory(CHAT_RESUME_MAX_MESSAGES="5")
    browser, username, room_id = await signed_in(server, open_browser)
    async with connected_storage(server.database_url) as storage:
        user = await storage.users.get_by_username(username)
        assert user is not None
        for i in range(8):
            await storage.messages.add(NewMessage(room_id, user.id, user.username, f"m{i}", f"c{i}"))

    far = await browser.socket(room_id, since=0)
    _, far_history = await far.join()
    near = await browser.socket(room_id, since=3)
    _, near_history = await near.join()

    assert far_history == {"type": "history", "messages": [], "has_more": False, "reset": True}
    assert [m["seq"] for m in near_history["messages"]] == [4, 5, 6, 7, 8]


# -- session ids are renewed, bad cookies are logged ---------------------------------


async def test_signing_in_again_or_changing_the_password_issues_a_new_session_id(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory()
    browser, username, _ = await signed_in(server, open_browser)
    before_login = browser.cookie_header()

    assert (await browser.login(username)).code == 302
    after_login = browser.cookie_header()
    new = "another long passphrase"
    await browser.post("/account/password", {"current": PASSWORD, "password": new, "confirm": new})
    after_change = browser.cookie_header()

    assert len({before_login, after_login, after_change}) == 3
    for stale in (before_login, after_login):
        replay = open_browser(server.base_url)
        response = await replay.request("GET", "/rooms", headers={"Cookie": stale})
        assert response.code == 302  # anonymous: sent to sign in
    assert (await browser.get("/rooms")).code == 200
    assert audit_lines(server, "session_cookie_refused")


async def test_sockets_opened_closed_and_refused_are_in_the_audit_log(
    server_factory: ServerFactory, open_browser: OpenBrowser
) -> None:
    server = server_factory()
    browser, _, room_id = await signed_in(server, open_browser)
    sock = await browser.socket(room_id)
    await sock.join()
    sock.close()
    assert await handshake_status(open_browser(server.base_url), room_id) == 401

    await eventually(lambda: bool(audit_lines(server, "socket_closed")), 5, "the close in the audit log")
    (opened,) = audit_lines(server, "socket_opened")
    assert f"room={room_id}" in opened and "ip=127.0.0.1" in opened
    (refused,) = audit_lines(server, "handshake_refused")
    assert "status=401" in refused
    assert browser.cookies["chat_session"] not in server.logs()
