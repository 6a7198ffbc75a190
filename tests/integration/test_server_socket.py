"""The live chat protocol (docs/protocol.md) against a real server process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import pytest

from tests.support.client import Browser, RoomSocket, handshake_status
from tests.support.server import Server, ServerFactory
from tests.support.storage import seed_messages

# The live protocol over each backend's own write path (SQLite's one writer,
# MongoDB's room writers and unique-index races).
SERVER_BACKENDS = ("sqlite", "mongodb")


async def signed_in_pair(new_browser: Callable[[], Browser]) -> tuple[Browser, Browser, str]:
    alice, bob = new_browser(), new_browser()
    await alice.register()
    await bob.register()
    room_id = await alice.create_room()
    return alice, bob, room_id


async def test_hello_names_the_room_the_user_and_this_process(browser: Browser, chat_server: Server) -> None:
    username = await browser.register()
    name = f"hello {uuid.uuid4().hex[:6]}"
    room_id = await browser.create_room(name)
    sock = await browser.socket(room_id)
    hello, history = await sock.join()
    assert hello["room"] == {"id": room_id, "name": name}
    assert hello["user"]["username"] == username and hello["user"]["id"]
    assert hello["instance"] == f"127.0.0.1:{chat_server.port}"
    assert hello["last_seq"] == 0
    assert history == {"type": "history", "messages": [], "has_more": False}


async def test_two_users_receive_each_others_messages_in_seq_order_and_only_the_sender_gets_the_ack(
    new_browser: Callable[[], Browser],
) -> None:
    alice, bob, room_id = await signed_in_pair(new_browser)
    a, b = await alice.socket(room_id), await bob.socket(room_id)
    await a.join()
    await b.join()

    sent = []
    for i in range(5):
        sender = a if i % 2 == 0 else b
        client_id = await sender.send_message(f"message {i}")
        sent.append((sender, client_id))
        ack = await sender.recv_type("ack")
        assert ack["client_id"] == client_id and ack["message"]["body"] == f"message {i}"
        # both sockets, the sender included, get the broadcast
        for sock in (a, b):
            frame = await sock.recv_type("message")
            assert frame["message"]["client_id"] == client_id
            assert frame["message"]["id"] == ack["message"]["id"]

    # Now fire without waiting and check the whole streams.
    for i in range(5, 25):
        await (a if i % 2 else b).send_message(f"burst {i}")
    streams: dict[str, list[dict]] = {"a": [], "b": []}
    acks = {"a": 0, "b": 0}
    for key, sock in (("a", a), ("b", b)):
        while len(streams[key]) < 20 or acks[key] < 10:
            frame = await sock.recv()
            if frame["type"] == "ack":
                acks[key] += 1
            else:
                assert frame["type"] == "message", frame
                streams[key].append(frame["message"])
    assert acks == {"a": 10, "b": 10}
    seqs_a = [m["seq"] for m in streams["a"]]
    assert seqs_a == sorted(seqs_a) and len(set(seqs_a)) == 20
    assert streams["a"] == streams["b"]
    await a.expect_silence()


async def test_messages_have_the_documented_shape(new_browser: Callable[[], Browser]) -> None:
    alice, _, room_id = await signed_in_pair(new_browser)
    sock = await alice.socket(room_id)
    hello, _ = await sock.join()
    client_id = await sock.send_message("  padded body  ")
    ack = await sock.recv_type("ack")
    message = ack["message"]
    assert set(message) == {
        "id",
        "room_id",
        "seq",
        "user_id",
        "username",
        "body",
        "created_at",
        "client_id",
        "rev",
        "edited_at",
        "deleted_at",
        "html",
    }
    assert message["room_id"] == room_id and message["client_id"] == client_id
    assert message["user_id"] == hello["user"]["id"] and message["username"] == hello["user"]["username"]
    assert message["body"] == "padded body"  # trimmed
    assert message["seq"] == 1
    assert message["created_at"].endswith("Z") and "T" in message["created_at"]
    assert (message["rev"], message["edited_at"], message["deleted_at"]) == (0, None, None)
    assert message["html"] == "<p>padded body</p>"


async def test_joining_sends_the_last_50_messages_in_order(browser: Browser, chat_server: Server) -> None:
    username = await browser.register()
    room_id = await browser.create_room()
    await seed_messages(chat_server.database_url, username, room_id, (f"m{i}" for i in range(55)))

    sock = await browser.socket(room_id)
    hello, history = await sock.join()
    assert hello["last_seq"] == 55
    assert [m["seq"] for m in history["messages"]] == list(range(6, 56))
    assert [m["body"] for m in history["messages"]][-1] == "m54"
    assert history["has_more"] is True


async def test_since_resumes_with_every_later_message_in_pages_of_at_most_500(
    browser: Browser, chat_server: Server
) -> None:
    username = await browser.register()
    room_id = await browser.create_room()
    total = 620
    await seed_messages(chat_server.database_url, username, room_id, (f"m{i}" for i in range(total)))

    sock = await browser.socket(room_id, since=100)
    await sock.recv_type("hello")
    first = await sock.recv_type("history")
    second = await sock.recv_type("history")
    assert len(first["messages"]) == 500 and first["has_more"] is True
    assert len(second["messages"]) == 20 and second["has_more"] is False
    seqs = [m["seq"] for m in first["messages"] + second["messages"]]
    assert seqs == list(range(101, total + 1))

    # `sync` asks again for everything after a seq, answered the same way.
    await sock.send_json({"type": "sync", "since": total - 3})
    again = await sock.recv_type("history")
    assert [m["seq"] for m in again["messages"]] == [total - 2, total - 1, total]
    assert again["has_more"] is False


async def test_resending_a_client_id_stores_nothing_new_and_acks_the_original(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    client_id = await sock.send_message("only once")
    original = (await sock.recv_type("ack"))["message"]
    await sock.recv_type("message")
    await sock.send_message("only once (retry)", client_id=client_id)
    retry = await sock.recv_type("ack")
    assert retry["message"] == original
    await sock.expect_silence()  # no second broadcast
    sock.close()

    fresh = await browser.socket(room_id, since=0)
    _, history = await fresh.join()
    assert [m["client_id"] for m in history["messages"]] == [client_id]


@pytest.mark.parametrize(
    ("frame", "client_id"),
    [
        ("not json", None),
        ("[1, 2]", None),
        (json.dumps({"type": "shout", "client_id": "c1"}), "c1"),
        (json.dumps({"type": "send", "body": "no client id"}), None),
        (json.dumps({"type": "send", "client_id": "c2"}), "c2"),
        (json.dumps({"type": "send", "client_id": "c3", "body": "   "}), "c3"),
        (json.dumps({"type": "sync", "since": -1}), None),
    ],
)
async def test_malformed_frames_get_bad_request_and_the_connection_stays_usable(
    browser: Browser, frame: str, client_id: str | None
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.conn.write_message(frame)
    error = await sock.recv_type("error")
    assert error["code"] == "bad_request" and error["message"]
    assert error.get("client_id") == client_id
    await sock.send_message("still here")
    assert (await sock.recv_type("ack"))["message"]["body"] == "still here"


async def test_a_body_over_4000_characters_is_too_large_but_4000_is_fine(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    client_id = await sock.send_message("x" * 4001)
    error = await sock.recv_type("error")
    assert (error["code"], error["client_id"]) == ("too_large", client_id)
    await sock.send_message("y" * 4000)
    assert len((await sock.recv_type("ack"))["message"]["body"]) == 4000


async def test_a_frame_over_64_kib_closes_the_connection_with_1009(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.send_message("z" * (64 * 1024 + 1))
    assert await sock.closed() == 1009


async def test_sending_too_fast_is_rate_limited(
    server_factory: ServerFactory,
    open_browser: Callable[[str], Browser],
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="3 per minute")
    browser = open_browser(server.base_url)
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    ids = [await sock.send_message(f"m{i}") for i in range(5)]
    acks, errors = [], []
    while len(acks) + len(errors) < 5:
        frame = await sock.recv()
        if frame["type"] == "ack":
            acks.append(frame["client_id"])
        elif frame["type"] == "error":
            errors.append(frame)
    assert acks == ids[:3]
    assert [(e["code"], e["client_id"]) for e in errors] == [("rate_limited", ids[3]), ("rate_limited", ids[4])]


async def test_signing_out_ends_the_open_socket_at_once_and_nothing_more_is_stored(
    browser: Browser, new_browser: Callable[[], Browser]
) -> None:
    username = await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()

    await browser.logout()

    error = await sock.recv_type("error", timeout=2)
    assert error["code"] == "forbidden"
    assert await sock.closed(timeout=2) == 1008
    # Signed in again elsewhere: the room holds nothing sent after the sign-out.
    again = new_browser()
    await again.login(username)
    fresh = await again.socket(room_id, since=0)
    _, history = await fresh.join()
    assert history["messages"] == []


async def test_the_handshake_is_refused_without_a_session_for_unknown_rooms_and_foreign_origins(
    browser: Browser, chat_server: Server
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    assert await handshake_status(Browser(chat_server.base_url), room_id) == 401
    assert await handshake_status(browser, "no-such-room") == 404
    assert await handshake_status(browser, room_id, origin="http://evil.example") == 403
    assert await handshake_status(browser, room_id, origin=chat_server.base_url) == 101
    assert await handshake_status(browser, room_id, since=5) == 101


async def test_html_in_a_message_is_shown_as_text_on_the_room_page(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.send_message('<script>alert("pwned")</script><b>bold</b>')
    await sock.recv_type("ack")
    page = (await browser.get(f"/rooms/{room_id}")).body.decode()
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page


async def test_the_room_page_renders_the_last_50_messages_without_javascript(
    browser: Browser, chat_server: Server
) -> None:
    username = await browser.register()
    room_id = await browser.create_room()
    await seed_messages(chat_server.database_url, username, room_id, (f"line {i}" for i in range(52)))
    page = (await browser.get(f"/rooms/{room_id}")).body.decode()
    assert page.count(' data-seq="') == 50
    assert "line 1<" not in page and "line 2<" in page and "line 51<" in page
    assert 'data-last-seq="52"' in page


async def test_history_users_and_rooms_survive_a_server_restart(
    server_factory: ServerFactory,
    open_browser: Callable[[str], Browser],
) -> None:
    for backend in ("sqlite", "mongodb"):
        server: Server = server_factory(backend)
        browser = open_browser(server.base_url)
        username = await browser.register()
        room_id = await browser.create_room()
        sock = await browser.socket(room_id)
        await sock.join()
        await sock.send_message("before the restart")
        await sock.recv_type("ack")
        sock.close()

        server.restart()  # a new process on the same database

        assert (await browser.get("/rooms")).code == 200  # the session survived too
        again = open_browser(server.base_url)
        assert (await again.login(username)).code == 302
        sock = await again.socket(room_id)
        hello, history = await sock.join()
        assert hello["last_seq"] == 1
        assert [m["body"] for m in history["messages"]] == ["before the restart"]


async def test_concurrent_senders_in_one_room_get_distinct_increasing_seqs(new_browser: Callable[[], Browser]) -> None:
    browsers = [new_browser() for _ in range(4)]
    for b in browsers:
        await b.register()
    room_id = await browsers[0].create_room()
    socks: list[RoomSocket] = [await b.socket(room_id) for b in browsers]
    for s in socks:
        await s.join()

    async def blast(sock: RoomSocket) -> None:
        for i in range(10):
            await sock.send_message(f"{i}")

    await asyncio.gather(*(blast(s) for s in socks))
    received: list[list[int]] = []
    for s in socks:
        seqs: list[int] = []
        acks = 0
        while len(seqs) < 40 or acks < 10:
            frame = await s.recv()
            if frame["type"] == "ack":
                acks += 1
            else:
                seqs.append(frame["message"]["seq"])
        received.append(seqs)
    assert received[0] == list(range(1, 41))
    assert all(r == received[0] for r in received)


async def test_a_since_that_is_not_a_plain_number_is_refused_with_400(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    # 2^63 and 20 nines used to reach storage (OverflowError, close 1011).
    for since in ("-1", "abc", "²", "1.5", "+1", "1e3", str(2**53), str(2**63), "9" * 20, "9" * 5000):
        origin = {"Origin": browser.origin}
        response = await browser.request("GET", f"/rooms/{room_id}/ws?since={since}", headers=origin)
        # Not a WebSocket request, but prepare() runs first and refuses it.
        assert response.code == 400, (since, response.code)
    assert await handshake_status(browser, room_id, since=2**53 - 1) == 101
