"""Several processes acting as one server: supervisord + nginx + Redis + MongoDB (FerretDB).

Everything goes through nginx, as users would; ``instance`` in each hello
frame tells which process a socket landed on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser as Chromium

from chat.tools.cluster import Cluster
from chat.wire.refusals import Close
from tests.support.client import Browser, RoomSocket
from tests.support.cluster import LANDING_TIMEOUT, socket_on
from tests.support.pages import register, say
from tests.support.waiting import eventually


async def collect_messages(sock: RoomSocket, count: int, timeout: float = 20.0) -> list[dict]:
    messages = []
    while len(messages) < count:
        frame = await sock.recv(timeout)
        if frame["type"] == "message":
            messages.append(frame["message"])
    return messages


async def test_clients_on_different_processes_get_every_message_of_their_room_in_order_exactly_once(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    browsers = [open_browser(cluster.url) for _ in range(4)]
    for b in browsers:
        await b.register()
    room_id = await browsers[0].create_room()
    other_room = await browsers[0].create_room()

    sockets: list[RoomSocket] = []
    instances: list[str] = []
    for b in browsers:
        # Alternate processes explicitly, so both carry senders and readers.
        avoid = {instances[-1]} if instances else None
        sock, instance = await socket_on(b, room_id, avoid=avoid)
        sockets.append(sock)
        instances.append(instance)
    assert len(set(instances)) == 2, instances
    bystander, _ = await socket_on(browsers[0], other_room)

    per_sender = 15
    sent: dict[str, set[str]] = {}

    async def send_all(index: int, sock: RoomSocket) -> None:
        sent[str(index)] = {await sock.send_message(f"{index}-{n}") for n in range(per_sender)}

    await asyncio.gather(*(send_all(i, s) for i, s in enumerate(sockets)))
    total = per_sender * len(sockets)
    streams = await asyncio.gather(*(collect_messages(s, total) for s in sockets))

    expected = set().union(*sent.values())
    for stream in streams:
        seqs = [m["seq"] for m in stream]
        assert seqs == sorted(seqs) and len(set(seqs)) == total  # in seq order, no duplicates
        assert {m["client_id"] for m in stream} == expected  # nothing lost
        assert stream == streams[0]  # every process delivered the same sequence
    for sock in sockets:
        await sock.expect_silence(0.5)  # and nothing extra arrives
    await bystander.expect_silence(0.5)  # rooms do not leak into each other


async def test_after_restarting_every_process_data_survives_and_clients_resume_with_since(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    alice, bob = open_browser(cluster.url), open_browser(cluster.url)
    alice_name = await alice.register()
    await bob.register()
    room_name = f"durable {uuid.uuid4().hex[:6]}"
    room_id = await alice.create_room(room_name)
    a, _ = await socket_on(alice, room_id)
    await a.send_message("before the restart")
    last_seen = (await a.recv_type("ack"))["message"]["seq"]

    await asyncio.to_thread(cluster.supervisorctl, "restart", "all")
    assert await a.closed() == 1001  # the process said goodbye as it shut down
    await asyncio.to_thread(cluster.wait_healthy)

    # Sessions, users and rooms are all still there.
    rooms_page = await alice.get("/rooms")
    assert rooms_page.code == 200 and room_name in rooms_page.body.decode()
    assert (await Browser(cluster.url).login(alice_name)).headers["Location"] == "/rooms"

    # Bob talks while Alice is away ...
    b, _ = await socket_on(bob, room_id)
    for text in ("while you were out", "second one"):
        await b.acked(await b.send_message(text))
    b.close()

    # ... and Alice, reconnecting from her last seq, gets exactly what she missed.
    sock = await alice.socket(room_id, since=last_seen)
    await sock.recv_type("hello")
    history = await sock.recv_type("history")
    assert [m["body"] for m in history["messages"]] == ["while you were out", "second one"]
    assert history["messages"][0]["seq"] > last_seen
    sock.close()

    full = await alice.socket(room_id, since=0)
    _, everything = await full.join()
    assert [m["body"] for m in everything["messages"]] == ["before the restart", "while you were out", "second one"]


async def test_a_user_on_one_process_sees_a_user_on_another_arrive_and_leave(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    alice, bob = open_browser(cluster.url), open_browser(cluster.url)
    alice_name = await alice.register()
    bob_name = await bob.register()
    room_id = await alice.create_room()

    a, alice_instance = await socket_on(alice, room_id)
    assert await a.recv_presence() == [alice_name]
    b, bob_instance = await socket_on(bob, room_id, avoid={alice_instance})
    assert bob_instance != alice_instance

    async def presence_until(sock: RoomSocket, expected: list[str]) -> None:
        while (names := await sock.recv_presence()) != expected:
            pass
        assert names == expected

    await presence_until(a, sorted([alice_name, bob_name]))
    await presence_until(b, sorted([alice_name, bob_name]))

    # The room page, rendered by either process, lists both.
    page = (await alice.get(f"/rooms/{room_id}")).body.decode()
    assert alice_name in page.split('id="presence"')[1] and bob_name in page.split('id="presence"')[1]

    b.close()
    await presence_until(a, [alice_name])


async def test_two_people_chat_in_browsers_served_by_different_processes(
    cluster: Cluster,
    chromium: Chromium,
    artifacts_dir: Path,
) -> None:
    base = cluster.url
    alice_ctx, bob_ctx = await chromium.new_context(), await chromium.new_context()
    alice, bob = await alice_ctx.new_page(), await bob_ctx.new_page()
    errors: list[str] = []
    for page in (alice, bob):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    alice_name, bob_name = f"alice_{uuid.uuid4().hex[:6]}", f"bob_{uuid.uuid4().hex[:6]}"
    await register(alice, base, alice_name)
    await register(bob, base, bob_name)

    room = f"Cluster room {uuid.uuid4().hex[:4]}"
    await alice.fill("input[name=name]", room)
    await alice.click("form.create-room button[type=submit]")
    await alice.wait_for_url(f"{base}/rooms/*")
    await alice.wait_for_selector("#connection-state.state-connected")
    alice_instance = await alice.get_attribute("#room", "data-instance")

    # nginx balances each new socket to the least busy process; reload until
    # Bob's socket is on the other one.
    await bob.goto(alice.url)

    async def bob_elsewhere() -> bool:
        await bob.wait_for_selector("#connection-state.state-connected")
        if await bob.get_attribute("#room", "data-instance") != alice_instance:
            return True
        await bob.reload()
        return False

    await eventually(bob_elsewhere, LANDING_TIMEOUT, "Bob's page on the other process", interval=0)
    bob_instance = await bob.get_attribute("#room", "data-instance")
    assert bob_instance != alice_instance

    await say(alice, "hello from the first process")
    await bob.wait_for_selector("li.message >> text=hello from the first process")
    await say(bob, "and hello from the second")
    await alice.wait_for_selector("li.message >> text=and hello from the second")
    await alice.wait_for_selector(f"#presence li >> text={bob_name}")
    await bob.wait_for_selector(f"#presence li >> text={alice_name}")
    for page in (alice, bob):
        assert await page.locator("li.message").count() == 2

    await alice.screenshot(path=str(artifacts_dir / f"alice-{alice_instance.replace(':', '_')}.png"), full_page=True)
    await bob.screenshot(path=str(artifacts_dir / f"bob-{bob_instance.replace(':', '_')}.png"), full_page=True)
    assert errors == []


async def test_typing_is_seen_by_the_others_on_another_process_and_never_by_the_typist(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    alice, bob = open_browser(cluster.url), open_browser(cluster.url)
    await alice.register()
    bob_name = await bob.register()
    room_id = await alice.create_room()
    typist, typist_on = await socket_on(bob, room_id)
    typist_tab, _ = await socket_on(bob, room_id, want={typist_on})
    reader, reader_on = await socket_on(alice, room_id, avoid={typist_on})
    assert reader_on != typist_on

    await typist.send_json({"type": "typing"})

    notice = await reader.recv_type("typing", timeout=LANDING_TIMEOUT)
    assert notice["user"]["username"] == bob_name
    # Never stored and never echoed: the typist's sockets, here and in another tab, see nothing of it.
    for own in (typist, typist_tab):
        await own.expect_silence(0.5)
    await reader.send_json({"type": "sync", "since": 0})
    assert (await reader.recv_type("history"))["messages"] == []


async def test_edits_and_deletions_reach_another_process_live_and_a_resume_after_them(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    alice, bob = open_browser(cluster.url), open_browser(cluster.url)
    await alice.register()
    await bob.register()
    room_id = await alice.create_room()
    author, author_on = await socket_on(alice, room_id)
    reader, _ = await socket_on(bob, room_id, avoid={author_on})
    first = await author.acked(await author.send_message("helo"))
    second = await author.acked(await author.send_message("a second thought"))

    await author.send_json({"type": "edit", "id": first["id"], "body": "hello"})
    live = (await reader.skip_to("message_updated", timeout=LANDING_TIMEOUT))["message"]
    assert (live["id"], live["body"], live["rev"]) == (first["id"], "hello", 1) and live["edited_at"]

    # The reader goes away; the author edits again and deletes the other one.
    reader.close()
    await author.send_json({"type": "edit", "id": first["id"], "body": "hello!"})
    await author.send_json({"type": "delete", "id": second["id"]})
    for _ in range(3):  # the author's own socket is told of each revision too
        await author.skip_to("message_updated")

    again, _ = await socket_on(bob, room_id)
    await again.send_json({"type": "sync", "since": second["seq"], "rev": live["rev"]})
    assert (await again.recv_type("history"))["messages"] == []
    updates = await again.recv_type("updates")
    assert [(m["seq"], m["body"], m["rev"]) for m in updates["messages"]] == [
        (first["seq"], "hello!", 2),
        (second["seq"], "", 3),
    ]
    assert updates["messages"][1]["deleted_at"] and updates["last_rev"] == 3

    # Not the reader's to change.
    await again.send_json({"type": "delete", "id": first["id"], "client_id": "not-mine"})
    refused = await again.skip_to("error")
    assert (refused["code"], refused["client_id"]) == ("forbidden", "not-mine")
    await again.send_json({"type": "sync", "since": 0})
    history = await again.recv_type("history")
    assert [m["body"] for m in history["messages"]] == ["hello!", ""]


async def test_a_removed_or_banned_members_sockets_on_every_process_close_within_a_second(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    owner, guest, troll = (open_browser(cluster.url) for _ in range(3))
    await owner.register()
    guest_name = await guest.register()
    await troll.register()
    private_id = await owner.create_room(private=True)
    public_id = await owner.create_room()
    assert (await owner.post(f"/rooms/{private_id}/invite", {"username": guest_name})).code == 302

    async def one_on_each_process(browser: Browser, room_id: str) -> list[RoomSocket]:
        # Whichever process takes the owner's request, one of these is on another.
        first, first_on = await socket_on(browser, room_id)
        second, _ = await socket_on(browser, room_id, avoid={first_on})
        return [first, second]

    guest_socks = await one_on_each_process(guest, private_id)
    troll_socks = await one_on_each_process(troll, public_id)
    guest_id = (await guest_socks[0].acked(await guest_socks[0].send_message("hi")))["user_id"]
    troll_id = (await troll_socks[0].acked(await troll_socks[0].send_message("first!")))["user_id"]

    for socks, room_id, action, user_id in (
        (guest_socks, private_id, "remove", guest_id),
        (troll_socks, public_id, "ban", troll_id),
    ):
        started = asyncio.get_running_loop().time()
        assert (await owner.post(f"/rooms/{room_id}/{action}", {"user_id": user_id, "confirmed": "yes"})).code == 302
        for sock in socks:
            assert await sock.closed(timeout=5) == Close.REMOVED
        assert asyncio.get_running_loop().time() - started < 1.0, action


async def test_unread_counts_reach_a_persons_stream_from_every_process(
    cluster: Cluster,
    open_browser: Callable[[str], Browser],
) -> None:
    alice, bob = open_browser(cluster.url), open_browser(cluster.url)
    await alice.register()
    bob_name = await bob.register()
    room_id = await alice.create_room()
    assert (await bob.post(f"/rooms/{room_id}/join", {})).code == 302
    stream = await bob.events()
    await stream.skip_to("badges")
    # One speaker on each process: whichever one serves bob's stream, a message comes from the other.
    first, first_on = await socket_on(alice, room_id)
    second, _ = await socket_on(alice, room_id, avoid={first_on})

    await first.acked(await first.send_message("from one process"))
    await second.acked(await second.send_message(f"@{bob_name} from the other"))

    activity = [await stream.skip_to("activity", timeout=LANDING_TIMEOUT) for _ in range(2)]
    assert sorted((a["last_seq"], a["mention"]) for a in activity) == [(1, False), (2, True)]
    tab, _ = await socket_on(bob, room_id, want={first_on})
    await tab.send_json({"type": "read", "seq": 2})
    read = await stream.skip_to("read", timeout=LANDING_TIMEOUT)
    assert (read["read_seq"], read["mentions"]) == (2, 0)
