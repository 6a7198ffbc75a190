"""Private rooms and direct conversations exist only for their members; removal and bans take effect at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from chat.services.rooms.catalog import ROOMS_PER_PAGE
from chat.wire.refusals import Close
from tests.support.client import Browser, RoomSocket, handshake_status
from tests.support.server import Server, ServerFactory
from tests.support.storage import connected_storage


async def three_people(new_browser: Callable[[], Browser]) -> tuple[Browser, Browser, Browser, list[str]]:
    people = [new_browser() for _ in range(3)]
    names = [await person.register() for person in people]
    return people[0], people[1], people[2], names


async def status_of(browser: Browser, path: str) -> int:
    return (await browser.get(path)).code


async def test_a_private_room_page_is_not_found_for_an_outsider_exactly_as_no_room(
    new_browser: Callable[[], Browser],
) -> None:
    owner, _, outsider, _ = await three_people(new_browser)
    room_id = await owner.create_room(private=True)

    assert await status_of(owner, f"/rooms/{room_id}") == 200
    assert await status_of(outsider, f"/rooms/{room_id}") == 404
    assert await status_of(outsider, "/rooms/" + "0" * 24) == 404
    rooms_page = (await outsider.get("/rooms")).body.decode()
    assert room_id not in rooms_page


async def test_a_private_rooms_older_pages_are_not_found_for_an_outsider(new_browser: Callable[[], Browser]) -> None:
    owner, _, outsider, _ = await three_people(new_browser)
    room_id = await owner.create_room(private=True)
    sock = await owner.socket(room_id)
    await sock.join()
    for i in range(3):
        await sock.acked(await sock.send_message(f"secret {i}"))

    assert await status_of(outsider, f"/rooms/{room_id}?before=3") == 404
    assert "secret" not in (await outsider.get(f"/rooms/{room_id}?before=3")).body.decode()


async def test_a_private_rooms_socket_refuses_an_outsider_so_history_fetch_and_sync_never_start(
    new_browser: Callable[[], Browser],
) -> None:
    owner, _, outsider, _ = await three_people(new_browser)
    room_id = await owner.create_room(private=True)

    assert await handshake_status(outsider, room_id) == 404
    assert await handshake_status(outsider, room_id, since=0) == 404
    assert await handshake_status(owner, room_id) == 101
    # The probe a page asks after a refused handshake gives the same answer, in JSON.
    assert await status_of(outsider, f"/rooms/{room_id}/access") == 404
    assert await status_of(owner, f"/rooms/{room_id}/access") == 200


async def test_the_access_probe_tells_a_page_why_its_socket_was_refused(new_browser: Callable[[], Browser]) -> None:
    owner = new_browser()
    await owner.register()
    room_id = await owner.create_room()
    answer = await owner.get(f"/rooms/{room_id}/access")
    assert (answer.code, answer.body) == (200, b'{"access": "ok"}')
    assert "no-store" in answer.headers["Cache-Control"]
    # Signed out: 401, never the redirect to the sign-in page a fetch would follow to a 200.
    stranger = new_browser()
    signed_out = await stranger.get(f"/rooms/{room_id}/access")
    assert (signed_out.code, signed_out.headers["Content-Type"]) == (401, "application/json; charset=UTF-8")
    assert "Location" not in signed_out.headers
    assert await status_of(owner, "/rooms/" + "0" * 24 + "/access") == 404
    await owner.post("/logout", {})
    assert await status_of(owner, f"/rooms/{room_id}/access") == 401


async def outsider_in_a_public_room(new_browser: Callable[[], Browser]) -> tuple[RoomSocket, str]:
    """An outsider's socket in a public room, and a private room (with messages) they are not in."""
    owner, _, outsider, _ = await three_people(new_browser)
    private_id = await owner.create_room(private=True)
    sock = await owner.socket(private_id)
    await sock.join()
    for i in range(3):
        await sock.acked(await sock.send_message(f"secret {i}"))
    public_id = await owner.create_room()
    theirs = await outsider.socket(public_id)
    await theirs.join()
    return theirs, private_id


async def test_fetch_cannot_reach_a_private_room_from_another_rooms_socket(new_browser: Callable[[], Browser]) -> None:
    sock, private_id = await outsider_in_a_public_room(new_browser)

    # A frame names no room: a socket only ever reads its own, and a room field is refused.
    await sock.send_json({"type": "fetch", "before": 4, "room_id": private_id, "client_id": "peek"})
    refused = await sock.skip_to("error")
    assert (refused["code"], refused["client_id"]) == ("bad_request", "peek")
    await sock.send_json({"type": "fetch", "before": 4})
    assert (await sock.skip_to("history"))["messages"] == []


async def test_sync_cannot_reach_a_private_room_from_another_rooms_socket(new_browser: Callable[[], Browser]) -> None:
    sock, private_id = await outsider_in_a_public_room(new_browser)

    await sock.send_json({"type": "sync", "since": 0, "room_id": private_id, "client_id": "peek"})
    refused = await sock.skip_to("error")
    assert (refused["code"], refused["client_id"]) == ("bad_request", "peek")
    await sock.send_json({"type": "sync", "since": 0})
    assert (await sock.skip_to("history"))["messages"] == []


async def test_an_invited_member_reads_and_speaks_and_a_removed_one_is_closed_out_at_once(
    new_browser: Callable[[], Browser],
) -> None:
    owner, guest, _, names = await three_people(new_browser)
    room_id = await owner.create_room(private=True)
    response = await owner.post(f"/rooms/{room_id}/invite", {"username": names[1]})
    assert response.code == 302

    sock = await guest.socket(room_id)
    await sock.join()
    message = await sock.acked(await sock.send_message("thanks for having me"))
    assert message["body"] == "thanks for having me"
    guest_id = message["user_id"]

    response = await owner.post(f"/rooms/{room_id}/remove", {"user_id": guest_id, "confirmed": "yes"})
    assert response.code == 302
    refusal = await sock.skip_to("error")
    assert refusal["code"] == "forbidden"
    assert await sock.closed() == Close.REMOVED
    # And after it: no page, no socket, so no history, fetch or sync either.
    assert await status_of(guest, f"/rooms/{room_id}") == 404
    assert await handshake_status(guest, room_id, since=0) == 404


async def test_only_members_invite_and_only_the_owner_or_a_moderator_removes(
    new_browser: Callable[[], Browser],
) -> None:
    owner, member, outsider, names = await three_people(new_browser)
    room_id = await owner.create_room(private=True)
    await owner.post(f"/rooms/{room_id}/invite", {"username": names[1]})

    # An outsider cannot even see the room to invite into it.
    assert (await outsider.post(f"/rooms/{room_id}/invite", {"username": names[2]})).code == 404
    # A member may invite, but not remove.
    assert (await member.post(f"/rooms/{room_id}/invite", {"username": names[2]})).code == 302
    sock = await outsider.socket(room_id)  # invited now
    hello, _ = await sock.join()
    assert (
        await member.post(f"/rooms/{room_id}/remove", {"user_id": hello["user"]["id"], "confirmed": "yes"})
    ).code == 403
    unknown = await owner.post(f"/rooms/{room_id}/invite", {"username": "nobody_by_that_name"})
    assert unknown.code == 400 and "no user named" in unknown.body.decode()


async def test_a_banned_user_is_closed_out_of_a_public_room_and_kept_out(new_browser: Callable[[], Browser]) -> None:
    owner, troll, _, _ = await three_people(new_browser)
    room_id = await owner.create_room()
    watcher = await owner.socket(room_id)
    await watcher.join()
    sock = await troll.socket(room_id)
    hello, _ = await sock.join()
    await sock.acked(await sock.send_message("first!"))  # speaking joined the room
    joined = await watcher.skip_to("membership")
    assert (joined["change"], joined["user"]) == ("joined", hello["user"])

    assert (await owner.post(f"/rooms/{room_id}/ban", {"user_id": hello["user"]["id"], "confirmed": "yes"})).code == 302

    assert await sock.closed() == Close.REMOVED
    banned = await watcher.skip_to("membership")
    assert (banned["change"], banned["user"]) == ("banned", hello["user"])
    assert await status_of(troll, f"/rooms/{room_id}") == 403
    assert await handshake_status(troll, room_id) == 403
    assert await status_of(troll, f"/rooms/{room_id}/access") == 403
    assert (await troll.post(f"/rooms/{room_id}/join", {})).code == 403


async def test_a_dm_is_one_room_for_both_people_and_nobody_else(new_browser: Callable[[], Browser]) -> None:
    alice, bob, carol, names = await three_people(new_browser)

    # A GET only offers it (no state changes on GET): nothing is made yet.
    offer = await alice.get(f"/dm/{names[1]}")
    assert offer.code == 200 and f'action="/dm/{names[1]}"' in offer.body.decode()
    assert (await bob.get(f"/dm/{names[0]}")).code == 200
    assert (await alice.post(f"/dm/{names[1]}", {}, xsrf=False)).code == 403  # a form of ours, with its token
    first = await alice.post(f"/dm/{names[1]}", {})
    second = await bob.get(f"/dm/{names[0]}")  # made: a GET now finds it
    assert first.code == second.code == 302
    location = first.headers["Location"]
    assert location == second.headers["Location"] and location.startswith("/rooms/")
    room_id = location.rsplit("/", 1)[1]

    page = (await bob.get(location)).body.decode()
    title = f'<span id="room-name" class="truncate" title="{names[0]}">{names[0]}</span>'
    assert f"Direct conversation with</span> {title}" in page
    assert await status_of(carol, location) == 404
    assert await handshake_status(carol, room_id) == 404
    assert room_id not in (await carol.get("/rooms")).body.decode()
    assert (await alice.get("/dm/nobody_by_that_name")).code == 404
    assert (await alice.post("/dm/nobody_by_that_name", {})).code == 404
    assert (await alice.get(f"/dm/{names[0]}")).code == 400  # not with oneself
    assert (await alice.post(f"/dm/{names[0]}", {})).code == 400


async def test_the_rooms_page_searches_and_pages_public_rooms_with_members_and_activity(
    browser: Browser, chat_server: Server
) -> None:
    await browser.register()
    tag = uuid.uuid4().hex[:8]  # the server is shared: this test's rooms are the ones named with it
    async with connected_storage(chat_server.database_url) as storage:
        creator = await storage.users.add("maker_" + tag, b"$2b$04$fakehash")
        for i in range(ROOMS_PER_PAGE + 5):
            await storage.rooms.add(f"bulk {tag} {i:03d}", creator)
            await asyncio.sleep(0.002)
    lively = await browser.create_room(f"Lively place {tag}")
    sock = await browser.socket(lively)
    await sock.join()
    await sock.acked(await sock.send_message("hello"))

    def rows(page: str) -> int:
        return page.count('<td><a href="/rooms/')

    first = (await browser.get(f"/rooms?q={tag}")).body.decode()
    assert rows(first) == ROOMS_PER_PAGE and 'rel="next"' in first and 'rel="prev"' not in first
    second = (await browser.get(f"/rooms?q={tag}&page=2")).body.decode()
    # 55 bulk rooms and the lively one: 6 on the second page.
    assert rows(second) == 6 and 'rel="prev"' in second and 'rel="next"' not in second
    assert f"bulk {tag} 000" in second  # the oldest last
    found = (await browser.get(f"/rooms?q=LIVELY+PLACE+{tag.upper()}")).body.decode()
    assert rows(found) == 1
    table = found[found.index('<table class="rooms">') :]  # the sidebar lists the room too
    row = table[table.index("Lively place") :]
    assert '<td data-label="Members">1</td>' in row and "<time" in row.split("</tr>")[0]  # one member, a last message
    assert "No room" in (await browser.get("/rooms?q=nothing-like-it")).body.decode()
    assert (await browser.get("/rooms?page=0")).code == 400


# -- unread counts ----------------------------------------------------------------------


async def badges_of(stream: RoomSocket) -> dict[str, dict[str, object]]:
    frame = await stream.skip_to("badges")
    return {room["room_id"]: room for room in frame["rooms"]}


async def test_unread_and_mention_counts_follow_messages_markers_and_a_restart(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    server = server_factory()
    alice, bob = open_browser(server.base_url), open_browser(server.base_url)
    await alice.register()
    bob_name = await bob.register()
    room_id = await alice.create_room()
    assert (await bob.post(f"/rooms/{room_id}/join", {})).code == 302
    stream = await bob.events()
    assert (await badges_of(stream))[room_id] | {"title": ""} == {
        "room_id": room_id,
        "title": "",
        "kind": "public",
        "last_seq": 0,
        "read_seq": 0,
        "unread": 0,
        "mentions": 0,
    }

    speaker = await alice.socket(room_id)
    await speaker.join()
    for body in ("one", f"hey @{bob_name}", "three"):
        await speaker.acked(await speaker.send_message(body))
    seen = [await stream.skip_to("activity") for _ in range(3)]
    assert [(a["last_seq"], a["mention"], a["mine"]) for a in seen] == [
        (1, False, False),
        (2, True, False),
        (3, False, False),
    ]

    # Bob reads up to 2 in a tab: every stream of his hears the marker.
    tab = await bob.socket(room_id, since=0)
    await tab.join()
    await tab.send_json({"type": "read", "seq": 2})
    read = await stream.skip_to("read")
    assert (read["room_id"], read["read_seq"], read["mentions"]) == (room_id, 2, 0)
    await tab.send_json({"type": "read", "seq": 1})  # behind: ignored
    await tab.send_json({"type": "read", "seq": 99})  # ahead of what it was sent: only up to 3
    read = await stream.skip_to("read")
    assert read["read_seq"] == 3

    await speaker.acked(await speaker.send_message(f"@{bob_name} again"))
    server.restart()
    bob.close_sockets()
    after = await badges_of(await bob.events())
    assert (after[room_id]["unread"], after[room_id]["mentions"], after[room_id]["last_seq"]) == (1, 1, 4)


async def test_a_mention_alert_comes_from_a_real_mention_never_from_text_that_looks_like_one(
    new_browser: Callable[[], Browser],
) -> None:
    alice, bob = new_browser(), new_browser()
    await alice.register()
    bob_name = await bob.register()
    room_id = await alice.create_room()
    assert (await bob.post(f"/rooms/{room_id}/join", {})).code == 302
    bob_id = (await (await bob.socket(room_id)).join())[0]["user"]["id"]
    stream = await bob.events()
    await stream.skip_to("badges")
    speaker = await alice.socket(room_id)
    await speaker.join()

    forged = f'data-user-id="{bob_id}" <span class="mention" data-user-id="{bob_id}">x</span> "user_id":"{bob_id}"'
    for body in (forged, f'`@{bob_name}` in code, data-user-id="{bob_id}"', f"hey @{bob_name}"):
        await speaker.acked(await speaker.send_message(body))
    seen = [await stream.skip_to("activity") for _ in range(3)]

    assert [(a["mention"], a["mine"]) for a in seen] == [(False, False), (False, False), (True, False)]
    assert (await badges_of(await bob.events()))[room_id]["mentions"] == 1


async def test_a_member_leaves_and_is_closed_out_but_the_owner_keeps_the_room(
    new_browser: Callable[[], Browser],
) -> None:
    owner, guest, _, names = await three_people(new_browser)
    room_id = await owner.create_room(private=True)
    await owner.post(f"/rooms/{room_id}/invite", {"username": names[1]})
    sock = await guest.socket(room_id)
    await sock.join()

    left = await guest.post(f"/rooms/{room_id}/leave", {})
    assert left.code == 302 and left.headers["Location"] == "/rooms"
    assert await sock.closed() == Close.REMOVED
    assert await status_of(guest, f"/rooms/{room_id}") == 404
    refused = await owner.post(f"/rooms/{room_id}/leave", {})
    assert refused.code == 400 and "owner keeps the room" in refused.body.decode()


# -- room names ----------------------------------------------------------------------


async def test_an_outsider_may_take_a_private_rooms_name_but_never_a_public_ones(
    new_browser: Callable[[], Browser],
) -> None:
    owner, _, outsider, _ = await three_people(new_browser)
    tag = uuid.uuid4().hex[:8]  # the server is shared: names of this test's own
    hideout = await owner.create_room(f"Hideout {tag}", private=True)
    attic = await owner.create_room(f"Attic {tag}", private=True)

    # Refusing the name would tell them the private room exists: they get a room of their own.
    made = await outsider.post("/rooms", {"name": f"hideout {tag}"})
    assert made.code == 302 and made.headers["Location"] != f"/rooms/{hideout}"
    theirs = await outsider.create_room()
    assert (await outsider.post(f"/rooms/{theirs}/rename", {"name": f"ATTIC {tag}"})).code == 302
    page = (await outsider.get(f"/rooms/{theirs}")).body.decode()
    assert f"ATTIC {tag}" in page

    # A public room's name is public knowledge, and stays its own.
    for refused in (
        await outsider.post("/rooms", {"name": f"HIDEOUT {tag}"}),
        await owner.post("/rooms", {"name": f"attic {tag}"}),
        await outsider.post(f"/rooms/{theirs}/rename", {"name": f"Hideout {tag}"}),
    ):
        assert refused.code == 400 and "exists already" in refused.body.decode()
    # The private rooms are as they were: their members' own, a 404 to anyone else.
    assert f"Hideout {tag}" in (await owner.get(f"/rooms/{hideout}")).body.decode()
    assert await status_of(owner, f"/rooms/{attic}") == 200
    assert await status_of(outsider, f"/rooms/{hideout}") == await status_of(outsider, f"/rooms/{attic}") == 404
