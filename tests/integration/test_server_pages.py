"""Pages, accounts and sessions, against a real server process over real sockets."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from unittest import mock

import pytest
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner
from tornado.httpclient import HTTPResponse

from chat.web.cookies import COOKIE_NAME
from tests.support.client import PASSWORD, Browser, handshake_status
from tests.support.server import TEST_SECRET, Server, ServerFactory
from tests.support.storage import connected_storage

COOKIE_SALT = "chat.session-cookie"


def text(response: HTTPResponse) -> str:
    return response.body.decode()


def form_error(response: HTTPResponse) -> str:
    """The refusal a form came back with: under the field that caused it, or above the form."""
    page = text(response)
    match = re.search(r'<p id="field-(\w+)-error" class="field-error">(.*?)</p>', page, re.S)
    if match:
        # Tied to its field, which is marked and takes the focus.
        (field_tag,) = re.findall(rf'<input id="field-{match.group(1)}"[^>]*>', page)
        assert 'aria-invalid="true"' in field_tag and " autofocus" in field_tag
        assert f"field-{match.group(1)}-error" in re.search(r'aria-describedby="([^"]*)"', field_tag).group(1)
        return match.group(2).strip()
    match = re.search(r'<p class="form-error" role="alert" id="form-error">(.*?)</p>', page, re.S)
    return match.group(1).strip() if match else ""


async def test_root_redirects_to_login_when_signed_out_and_to_rooms_when_signed_in(browser: Browser) -> None:
    response = await browser.get("/")
    assert (response.code, response.headers["Location"]) == (302, "/login")
    await browser.register()
    response = await browser.get("/")
    assert (response.code, response.headers["Location"]) == (302, "/rooms")


async def test_register_signs_the_user_in_with_a_hardened_cookie(browser: Browser) -> None:
    username = f"Alice_{uuid.uuid4().hex[:6]}"
    response = await browser.post("/register", {"username": username, "password": PASSWORD, "confirm": PASSWORD})
    assert (response.code, response.headers["Location"]) == (302, "/rooms")
    header = next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(COOKIE_NAME + "="))
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "secure" not in lowered.replace("samesite", "")  # not configured here
    page = await browser.get("/rooms")
    assert page.code == 200 and username in text(page)


@pytest.mark.parametrize(
    ("username", "password", "confirm", "expected"),
    [
        ("ab", PASSWORD, PASSWORD, "3-32 characters"),
        ("x" * 33, PASSWORD, PASSWORD, "3-32 characters"),
        ("bad name!", PASSWORD, PASSWORD, "3-32 characters"),
        ("goodname", "short", "short", "at least 8"),
        ("goodname", "p" * 73, "p" * 73, "at most 72 bytes"),
        ("goodname", "é" * 37, "é" * 37, "at most 72 bytes"),  # 37 characters, 74 bytes
        ("goodname", PASSWORD, PASSWORD + "x", "do not match"),
        ("goodname", "iloveyou1", "iloveyou1", "most common"),
        ("goodname", "my goodname pw", "my goodname pw", "must not contain your username"),
    ],
)
async def test_register_rerenders_the_form_with_a_clear_message_on_bad_input(
    browser: Browser, username: str, password: str, confirm: str, expected: str
) -> None:
    response = await browser.post("/register", {"username": username, "password": password, "confirm": confirm})
    assert response.code == 400
    assert expected in form_error(response)
    assert COOKIE_NAME not in browser.cookies


async def test_usernames_are_unique_regardless_of_case(browser: Browser, new_browser: Callable[[], Browser]) -> None:
    username = await browser.register(f"Bob_{uuid.uuid4().hex[:6]}")
    other = new_browser()
    response = await other.post("/register", {"username": username.upper(), "password": PASSWORD, "confirm": PASSWORD})
    assert response.code == 400 and "taken" in form_error(response)
    # and the original account can sign in with any case of its name
    response = await other.login(username.lower())
    assert (response.code, response.headers["Location"]) == (302, "/rooms")


async def test_passwords_are_stored_as_bcrypt_cost_12(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    server = server_factory(CHAT_BCRYPT_ROUNDS="12")  # the default; the shared servers hash at 4
    username = await open_browser(server.base_url).register()
    async with connected_storage(server.database_url) as storage:
        user = await storage.users.get_by_username(username)
    assert user is not None and user.password_hash.startswith(b"$2b$12$")


async def test_login_with_a_wrong_password_or_unknown_user_gives_the_same_form_error(
    browser: Browser,
    new_browser: Callable[[], Browser],
) -> None:
    username = await browser.register()
    other = new_browser()
    wrong = await other.login(username, "not the password")
    unknown = await other.login(f"nobody_{uuid.uuid4().hex[:6]}")
    assert wrong.code == unknown.code == 400
    assert form_error(wrong) == form_error(unknown) == "Wrong username or password."
    assert COOKIE_NAME not in other.cookies


async def test_login_then_logout_round_trip(browser: Browser, new_browser: Callable[[], Browser]) -> None:
    username = await browser.register()
    other = new_browser()
    response = await other.login(username)
    assert (response.code, response.headers["Location"]) == (302, "/rooms")
    assert (await other.get("/rooms")).code == 200
    response = await other.logout()
    assert (response.code, response.headers["Location"]) == (302, "/login")
    assert COOKIE_NAME not in other.cookies
    response = await other.get("/rooms")
    assert response.code == 302 and response.headers["Location"].startswith("/login")


async def test_login_redirects_to_a_safe_next_page_only(browser: Browser, new_browser: Callable[[], Browser]) -> None:
    username = await browser.register()
    other = new_browser()
    await other.get("/login")
    response = await other.post("/login", {"username": username, "password": PASSWORD, "next": "//evil.example/"})
    assert response.headers["Location"] == "/rooms"
    await other.logout()
    response = await other.post("/login", {"username": username, "password": PASSWORD, "next": "/rooms?x=1"})
    assert response.headers["Location"] == "/rooms?x=1"


@pytest.mark.parametrize("path", ["/login", "/register", "/rooms", "/logout"])
async def test_forms_without_the_xsrf_token_are_refused_with_a_friendly_page(browser: Browser, path: str) -> None:
    await browser.register()
    response = await browser.post(path, {"username": "x", "password": "y", "name": "z"}, xsrf=False)
    assert response.code == 403
    body = text(response)
    assert "<html" in body and "Traceback" not in body and "reload the page" in body


async def test_a_cookie_replayed_after_logout_is_refused(browser: Browser, chat_server: Server) -> None:
    await browser.register()
    room_id = await browser.create_room()
    stolen = browser.cookies[COOKIE_NAME]
    await browser.logout()

    replay = Browser(chat_server.base_url)
    replay.cookies[COOKIE_NAME] = stolen
    response = await replay.get("/rooms")
    assert response.code == 302 and response.headers["Location"].startswith("/login")
    assert await handshake_status(replay, room_id) == 401


async def test_signing_in_again_issues_a_new_session_id(browser: Browser) -> None:
    username = await browser.register()
    first = browser.cookies[COOKIE_NAME]
    await browser.login(username)
    second = browser.cookies[COOKIE_NAME]
    assert first != second
    replay = Browser(browser.base_url)
    replay.cookies[COOKIE_NAME] = first
    assert (await replay.get("/rooms")).code == 302  # the old session is gone


def _flip_char(value: str, index: int) -> str:
    return value[:index] + ("B" if value[index] == "A" else "A") + value[index + 1 :]


def _resign(cookie: str, secret: str, age_seconds: float = 0) -> str:
    """Re-sign the session token inside ``cookie`` with ``secret``, backdated by ``age_seconds``."""
    token = URLSafeTimedSerializer(TEST_SECRET, salt=COOKIE_SALT).loads(cookie)
    serializer = URLSafeTimedSerializer(secret, salt=COOKIE_SALT)
    signed_at = int(time.time() - age_seconds)
    with mock.patch.object(TimestampSigner, "get_timestamp", lambda self: signed_at):
        return serializer.dumps(token)


@pytest.mark.parametrize(
    "forge",
    [
        # Change the signature's first character: its last one may differ only
        # in base64 padding bits, which decode to the same signature.
        pytest.param(lambda c: _flip_char(c, c.rindex(".") + 1), id="tampered-signature"),
        pytest.param(lambda c: "x" + c, id="tampered-payload"),
        pytest.param(lambda c: _resign(c, "some-other-deployment-secret-0123456789abcdef"), id="foreign-key"),
        pytest.param(lambda c: _resign(c, TEST_SECRET, age_seconds=15 * 24 * 3600), id="expired"),
        pytest.param(lambda c: "garbage", id="garbage"),
    ],
)
async def test_bad_session_cookies_mean_signed_out_not_an_error(browser: Browser, forge: Callable[[str], str]) -> None:
    await browser.register()
    room_id = await browser.create_room()
    genuine = browser.cookies[COOKIE_NAME]

    forged = Browser(browser.base_url)
    forged.cookies[COOKIE_NAME] = forge(genuine)
    response = await forged.get("/rooms")
    assert response.code == 302 and response.headers["Location"].startswith("/login")
    response = await forged.get("/login")
    assert response.code == 200 and "Sign in" in text(response)
    assert await handshake_status(forged, room_id) == 401


async def test_a_freshly_resigned_genuine_token_is_accepted(browser: Browser) -> None:
    # Guards the test above: the forging helper really produces valid cookies,
    # so the rejections there are due to the forgery alone.
    await browser.register()
    copy = Browser(browser.base_url)
    copy.cookies[COOKIE_NAME] = _resign(browser.cookies[COOKIE_NAME], TEST_SECRET, age_seconds=60)
    assert (await copy.get("/rooms")).code == 200


async def test_rooms_are_listed_with_members_activity_and_creator_and_creation_opens_the_room(browser: Browser) -> None:
    username = await browser.register()
    name = f"Lobby {uuid.uuid4().hex[:6]}"
    room_id = await browser.create_room(name)
    page = text(await browser.get("/rooms"))
    # Name, members (the creator), no message yet, and when and by whom it was created.
    row = re.search(
        rf'<a href="/rooms/{room_id}">{re.escape(name)}</a></td>\s*<td data-label="Members">1</td>\s*'
        rf'<td data-label="Last message"><span class="muted">none yet</span></td>\s*'
        rf'<td data-label="Created"><time datetime="([^"]+)" data-local>[^<]*</time> '
        rf'<span class="muted">by {username}</span>',
        page,
    )
    assert row, page
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row.group(1))
    room_page = await browser.get(f"/rooms/{room_id}")
    assert room_page.code == 200 and name in text(room_page)


@pytest.mark.parametrize(("name", "expected"), [("   ", "Give the room a name"), ("n" * 65, "at most 64")])
async def test_bad_room_names_rerender_the_form(browser: Browser, name: str, expected: str) -> None:
    await browser.register()
    response = await browser.post("/rooms", {"name": name})
    assert response.code == 400 and expected in form_error(response)


async def test_room_names_are_unique_regardless_of_case(browser: Browser) -> None:
    await browser.register()
    name = f"General {uuid.uuid4().hex[:6]}"
    await browser.create_room(name)
    response = await browser.post("/rooms", {"name": name.upper()})
    assert response.code == 400 and "exists" in form_error(response)


async def test_pages_need_a_session(browser: Browser) -> None:
    for path in ("/rooms", "/rooms/abc"):
        response = await browser.get(path)
        assert response.code == 302 and response.headers["Location"].startswith("/login?next=")


async def test_unknown_room_and_unknown_path_get_a_friendly_404(browser: Browser) -> None:
    await browser.register()
    for path in ("/rooms/doesnotexist", "/no/such/page"):
        response = await browser.get(path)
        assert response.code == 404
        body = text(response)
        assert "<html" in body and "Not found" in body and "Traceback" not in body


async def test_health_endpoints_answer(browser: Browser) -> None:
    assert (await browser.get("/healthz")).code == 200
    ready = await browser.get("/readyz")
    assert ready.code == 200 and b'"database": "ok"' in ready.body.replace(b'":"', b'": "')


async def test_pages_send_security_headers(browser: Browser) -> None:
    response = await browser.get("/login")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
