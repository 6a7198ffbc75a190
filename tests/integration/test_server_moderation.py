"""A room's owner and moderators delete any message, rename the room and set its topic; nobody else does."""

from __future__ import annotations

from collections.abc import Callable

from chat.wire.refusals import Close
from tests.support.client import Browser, RoomSocket
from tests.support.server import Server, ServerFactory
from tests.support.storage import connected_storage


async def room_with_people(
    new_browser: Callable[[], Browser],
) -> tuple[str, dict[str, Browser], dict[str, RoomSocket], dict[str, str], dict[str, str]]:
    """A public room of an owner, a moderator-to-be and a member, each with a socket; user ids, message ids."""
    people = {role: new_browser() for role in ("owner", "moderator", "member")}
    for browser in people.values():
        await browser.register()
    room_id = await people["owner"].create_room()
    sockets: dict[str, RoomSocket] = {}
    ids: dict[str, str] = {}
    said: dict[str, str] = {}
    for role, browser in people.items():
        sockets[role] = await browser.socket(room_id)
        hello, _ = await sockets[role].join()
        ids[role] = hello["user"]["id"]
        message = await sockets[role].acked(await sockets[role].send_message(f"hello from the {role}"))  # joins
        said[role] = message["id"]
    return room_id, people, sockets, ids, said


async def test_the_owner_names_a_moderator_who_deletes_anyones_message_live(
    new_browser: Callable[[], Browser],
) -> None:
    room_id, people, sockets, ids, said = await room_with_people(new_browser)
    response = await people["owner"].post(f"/rooms/{room_id}/role", {"user_id": ids["moderator"], "role": "moderator"})
    assert response.code == 302

    await sockets["moderator"].send_json({"type": "delete", "id": said["member"], "client_id": "mod-1"})

    for sock in sockets.values():
        updated = (await sock.skip_to("message_updated"))["message"]
        assert (updated["id"], updated["body"]) == (said["member"], "") and updated["deleted_at"]
    log = (await people["owner"].get(f"/rooms/{room_id}")).body.decode()
    assert "delete message" in log and "set role" in log


async def test_an_ordinary_member_is_refused_every_moderation(new_browser: Callable[[], Browser]) -> None:
    room_id, people, sockets, ids, said = await room_with_people(new_browser)

    await sockets["member"].send_json({"type": "delete", "id": said["owner"], "client_id": "not-mine"})
    refused = await sockets["member"].skip_to("error")
    assert (refused["code"], refused["client_id"]) == ("forbidden", "not-mine")
    member = people["member"]
    assert (await member.post(f"/rooms/{room_id}/rename", {"name": "mine now"})).code == 403
    assert (await member.post(f"/rooms/{room_id}/topic", {"topic": "vandalised"})).code == 403
    assert (await member.post(f"/rooms/{room_id}/role", {"user_id": ids["member"], "role": "moderator"})).code == 403
    assert (
        await member.post(f"/rooms/{room_id}/remove", {"user_id": ids["moderator"], "confirmed": "yes"})
    ).code == 403
    # A moderator may not name moderators either: that is the owner's.
    await people["owner"].post(f"/rooms/{room_id}/role", {"user_id": ids["moderator"], "role": "moderator"})
    moderator = people["moderator"]
    assert (await moderator.post(f"/rooms/{room_id}/role", {"user_id": ids["member"], "role": "moderator"})).code == 403


async def test_a_rename_and_a_topic_reach_the_room_live_and_the_rooms_page(new_browser: Callable[[], Browser]) -> None:
    room_id, people, sockets, _, _ = await room_with_people(new_browser)

    assert (await people["owner"].post(f"/rooms/{room_id}/rename", {"name": "The Kitchen"})).code == 302
    assert (await people["owner"].post(f"/rooms/{room_id}/topic", {"topic": "Recipes and  gossip"})).code == 302

    renamed = (await sockets["member"].skip_to("room_updated"))["room"]
    assert renamed["name"] == "The Kitchen"
    topic = (await sockets["member"].skip_to("room_updated"))["room"]
    assert (topic["name"], topic["topic"]) == ("The Kitchen", "Recipes and gossip")
    page = (await people["member"].get(f"/rooms/{room_id}")).body.decode()
    assert "The Kitchen" in page and "Recipes and gossip" in page
    assert "The Kitchen" in (await people["member"].get("/rooms")).body.decode()
    taken = await people["owner"].create_room("Taken name")
    clash = await people["owner"].post(f"/rooms/{taken}/rename", {"name": "the kitchen"})
    assert clash.code == 400 and "exists already" in clash.body.decode()


async def make_admin(server: Server, username: str) -> None:
    async with connected_storage(server.database_url) as storage:
        user = await storage.users.get_by_username(username)
        assert user is not None
        await storage.users.set_admin(user.id, True)


async def test_a_site_administrator_moderates_any_room_and_disables_accounts(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    # A server of its own: the administrator is named in storage, and users are cached for a while.
    server = server_factory()
    owner, member, admin = (open_browser(server.base_url) for _ in range(3))
    await owner.register()
    member_name = await member.register()
    admin_name = await admin.register()
    await make_admin(server, admin_name)
    room_id = await owner.create_room()
    sock = await member.socket(room_id)
    hello, _ = await sock.join()
    said = await sock.acked(await sock.send_message("spam spam spam"))

    assert (await member.get("/admin")).code == 404  # to anyone else, no such page
    assert (await admin.post(f"/rooms/{room_id}/topic", {"topic": "Moderated"})).code == 302
    watcher = await admin.socket(room_id)
    await watcher.join()
    await watcher.send_json({"type": "delete", "id": said["id"], "client_id": "admin-1"})
    assert (await watcher.skip_to("message_updated"))["message"]["deleted_at"]

    page = await admin.post("/admin/disable", {"username": member_name})
    assert page.code == 200 and f"{member_name} is disabled" in page.body.decode()
    assert await sock.closed() == Close.SESSION_ENDED
    assert (await admin.post("/admin/disable", {"username": admin_name})).code == 400  # never oneself
    signed_out = await member.get(f"/rooms/{room_id}")
    assert signed_out.code == 302 and signed_out.headers["Location"].startswith("/login")
    assert hello["user"]["username"] == member_name
