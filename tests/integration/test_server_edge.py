"""The edge against a real server process: hostile input, headers, cookies, origins, proxies.

Findings 5-8 of the hostile-user review and checklist items 1, 8-10, 14,
18, 19, 21-24 (docs/security.md maps each to its test). The servers
here trust only 127.0.0.1 as a proxy, so a client connecting from
127.0.0.2 is "the public" reaching a process port directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import struct
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.client import (
    OP_CLOSE,
    Browser,
    client_frame,
    close_code,
    handshake_status,
    raw_request,
    raw_websocket,
    read_frame,
)
from tests.support.logs import add_log_source
from tests.support.server import SHARED_SERVER_ENV, InProcessServer, Server, ServerFactory
from tests.support.waiting import eventually

PUBLIC = "127.0.0.2"  # any address but the trusted proxy's
FAST = {**SHARED_SERVER_ENV, "CHAT_BCRYPT_ROUNDS": "4", "CHAT_TRUSTED_PROXIES": "127.0.0.1/32"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Plain HTTP, as `make run`."""
    tmp = tmp_path_factory.mktemp("edge-plain")
    with InProcessServer(f"sqlite:///{tmp}/chat.sqlite3", tmp, **FAST) as started:
        yield started


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """As deployed behind TLS: CHAT_COOKIE_SECURE."""
    tmp = tmp_path_factory.mktemp("edge-secure")
    with InProcessServer(f"sqlite:///{tmp}/chat.sqlite3", tmp, CHAT_COOKIE_SECURE="true", **FAST) as started:
        yield started


@pytest.fixture(autouse=True)
def _attach_logs(request: pytest.FixtureRequest) -> None:
    for name in ("server", "secure_server"):
        if name in request.fixturenames:
            started = request.getfixturevalue(name)
            add_log_source(request, f"{name} {started.port}", started.logs)


@pytest.fixture
def browser(server: Server, open_browser: Callable[[str], Browser]) -> Browser:
    return open_browser(server.base_url)


@pytest.fixture
def new_browser(server: Server, open_browser: Callable[[str], Browser]) -> Callable[[], Browser]:
    return lambda: open_browser(server.base_url)


def csp(port: int, socket_scheme: str = "ws") -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {socket_scheme}://127.0.0.1:{port}; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


def handshake_head(room_id: str, host: str, origin: str, cookie: str, *extra: str) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    return "\r\n".join(
        [
            f"GET /rooms/{room_id}/ws HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: {origin}",
            f"Cookie: {cookie}",
            *extra,
        ]
    )


def host_of(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


# -- headers (checklist 21, 22; finding 8: no versions) ------------------------


async def test_every_answer_sends_the_security_headers_and_no_server_version(server: Server, browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    answers = {
        "login page": await browser.get("/login"),
        "rooms page": await browser.get("/rooms"),
        "room page": await browser.get(f"/rooms/{room_id}"),
        "404 page": await browser.get("/no/such/page"),
        "400 form": await browser.post("/rooms", {"name": "   "}),
        "refused handshake": await browser.request("GET", f"/rooms/{room_id}/ws", headers={"Origin": "null"}),
        "healthz": await browser.get("/healthz"),
        "readyz": await browser.get("/readyz"),
    }
    for what, response in answers.items():
        headers = response.headers
        assert headers.get("X-Content-Type-Options") == "nosniff", what
        assert headers.get("Referrer-Policy") == "strict-origin-when-cross-origin", what
        assert headers.get("X-Frame-Options") == "DENY", what
        assert headers.get("Content-Security-Policy") == csp(server.port), what
        assert headers.get("Cache-Control") == "no-store", what
        assert "Server" not in headers and "X-Powered-By" not in headers, (what, dict(headers))
        assert "Strict-Transport-Security" not in headers, what  # plain HTTP here
    for what in ("login page", "rooms page", "room page", "404 page", "400 form"):
        assert answers[what].headers["Content-Type"] == "text/html; charset=UTF-8", what
    assert "'unsafe-inline'" not in csp(server.port) and "'unsafe-eval'" not in csp(server.port)


async def test_static_files_are_nosniff_without_a_server_version(browser: Browser) -> None:
    for path in ("/static/chat.js", "/static/chat.css", "/static/missing.js"):
        response = await browser.get(path)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert "Server" not in response.headers and "X-Powered-By" not in response.headers, path
    assert (await browser.get("/static/chat.js")).headers["Content-Type"] == "text/javascript"


async def test_over_https_every_answer_carries_hsts(secure_server: Server, open_browser: Callable) -> None:
    browser = open_browser(secure_server.base_url)
    await browser.register()
    for path in ("/login", "/rooms", "/static/chat.css", "/healthz", "/no/such/page"):
        hsts = (await browser.get(path)).headers.get("Strict-Transport-Security", "")
        max_age = re.search(r"max-age=(\d+)", hsts)
        assert max_age and int(max_age.group(1)) >= 31536000 and "includeSubDomains" in hsts, (path, hsts)


async def test_the_scheme_a_trusted_proxy_forwards_is_believed_and_nobody_elses(server: Server) -> None:
    head = f"GET /login HTTP/1.1\r\nHost: {host_of(server)}\r\nX-Forwarded-Proto: https\r\nConnection: close"
    _, via_proxy, _ = await raw_request(server.base_url, head)
    assert via_proxy["content-security-policy"] == csp(server.port, "wss")
    assert via_proxy["strict-transport-security"] == "max-age=31536000; includeSubDomains"

    _, direct, _ = await raw_request(server.base_url, head, source=PUBLIC)
    assert direct["content-security-policy"] == csp(server.port, "ws")
    assert "strict-transport-security" not in direct


# -- cookies (checklist 1; finding 6) --------------------------------------------


def set_cookie(headers: list[str], name: str) -> str:
    matching = [h for h in headers if h.startswith(name + "=")]
    assert len(matching) == 1, headers
    return matching[0]


async def test_over_https_the_cookies_are_host_prefixed_secure_http_only_lax_and_small(
    secure_server: Server, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(secure_server.base_url)
    login_page = await browser.get("/login")
    xsrf = set_cookie(login_page.headers.get_list("Set-Cookie"), "__Host-_xsrf")
    response = await browser.post(
        "/register", {"username": f"u_{uuid.uuid4().hex[:8]}", "password": "p" * 12, "confirm": "p" * 12}
    )
    assert response.code == 302
    session = set_cookie(response.headers.get_list("Set-Cookie"), "__Host-chat_session")

    for header in (session, xsrf):
        attributes = [part.strip().lower() for part in header.split(";")[1:]]
        assert "secure" in attributes and "httponly" in attributes and "path=/" in attributes, header
        assert not any(a.startswith("domain") for a in attributes), header  # __Host- forbids it
        assert len(header.encode()) <= 4096
    assert "samesite=lax" in session.lower()
    assert not any(h.startswith("chat_session=") for h in response.headers.get_list("Set-Cookie"))

    assert (await browser.get("/rooms")).code == 200
    # The same value under the unprefixed name (as a subdomain could plant it) is not a session.
    planted = Browser(secure_server.base_url)
    planted.cookies["chat_session"] = browser.cookies["__Host-chat_session"]
    assert (await planted.get("/rooms")).code == 302

    logout = await browser.logout()
    cleared = set_cookie(logout.headers.get_list("Set-Cookie"), "__Host-chat_session")
    assert "secure" in cleared.lower()  # else browsers would ignore the deletion of a __Host- cookie
    assert (await browser.get("/rooms")).code == 302


async def test_a_session_id_in_the_url_or_a_form_is_ignored(browser: Browser, new_browser: Callable) -> None:
    await browser.register()
    token = browser.cookies["chat_session"]
    stranger: Browser = new_browser()
    for path in (f"/rooms?chat_session={quote(token)}", f"/rooms?session={quote(token)}"):
        response = await stranger.get(path)
        assert response.code == 302 and response.headers["Location"].startswith("/login"), path
    response = await stranger.post("/rooms", {"name": "via form", "chat_session": token})
    assert response.code in (400, 403) and "Location" not in response.headers


# -- signed-in pages (checklist 8; finding 6) --------------------------------------


async def test_every_signed_in_page_has_a_logout_control_and_is_never_stored(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    for path in ("/rooms", f"/rooms/{room_id}", "/rooms/no-such-room", "/no/such/page"):
        response = await browser.get(path)
        body = response.body.decode()
        assert re.search(r'<form[^>]*method="post"[^>]*action="/logout"', body), path
        assert response.headers["Cache-Control"] == "no-store", path


# -- CSRF (checklist 9) -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/logout", "/rooms", "/register"])
async def test_a_wrong_xsrf_token_is_refused(browser: Browser, new_browser: Callable, path: str) -> None:
    await browser.register()
    other: Browser = new_browser()
    await other.get("/login")
    foreign_token = other.xsrf_token()
    assert foreign_token and foreign_token != browser.xsrf_token()
    data = {"username": "x", "password": "y", "confirm": "y", "name": "z", "_xsrf": foreign_token}
    response = await browser.post(path, data, xsrf=False)
    assert response.code == 403
    assert (await browser.get("/rooms")).code == 200  # still signed in: logout was refused too


async def test_no_get_changes_state(browser: Browser, new_browser: Callable) -> None:
    username = await browser.register()
    assert (await browser.get("/logout")).code == 405
    assert (await browser.get("/rooms")).code == 200  # still signed in
    name = f"by get {uuid.uuid4().hex[:6]}"
    await browser.get("/rooms?" + urlencode({"name": name}))
    assert name not in (await browser.get("/rooms")).body.decode()
    newcomer = f"get_{uuid.uuid4().hex[:6]}"
    stranger: Browser = new_browser()
    await stranger.get("/register?" + urlencode({"username": newcomer, "password": "p" * 12, "confirm": "p" * 12}))
    assert (await stranger.login(newcomer, "p" * 12)).code == 400  # no such account
    assert (await stranger.get("/login?" + urlencode({"username": username}))).code == 200
    assert "chat_session" not in stranger.cookies


# -- WebSocket origin (checklist 10; finding 7) --------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://127.0.0.1:{port}.evil.example",  # our origin as a prefix
        "http://evil.example/127.0.0.1:{port}",
        "null",
        "",  # no Origin header at all
        "https://127.0.0.1:{port}",  # same host, another scheme
        "ftp://127.0.0.1:{port}",
        "http://127.0.0.1:{other_port}",  # another port
        "http://localhost:{port}",  # another host name for the same machine
        "http://127.0.0.1:{port}/rooms",
    ],
)
async def test_a_handshake_from_any_other_origin_is_refused_before_the_upgrade(
    server: Server, browser: Browser, origin: str
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    origin = origin.format(port=server.port, other_port=server.port + 1)
    assert await handshake_status(browser, room_id, origin=origin) == 403
    # Before the session is even looked at: a stranger gets 403 too, not 401.
    assert await handshake_status(Browser(server.base_url), room_id, origin=origin) == 403


async def test_a_handshake_from_exactly_our_origin_is_accepted(server: Server, browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    for origin in (f"http://127.0.0.1:{server.port}", f"HTTP://127.0.0.1:{server.port}"):
        assert await handshake_status(browser, room_id, origin=origin) == 101


async def test_behind_a_proxy_the_public_origin_is_the_configured_one(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    started = server_factory(CHAT_ALLOWED_ORIGINS="https://chat.example.org", **FAST)
    browser = open_browser(started.base_url)
    await browser.register()
    room_id = await browser.create_room()
    assert await handshake_status(browser, room_id, origin="https://chat.example.org") == 101
    assert await handshake_status(browser, room_id, origin="https://chat.example.org:443") == 101
    for other in ("http://chat.example.org", "https://chat.example.org.evil.example", "https://evil.chat.example.org"):
        assert await handshake_status(browser, room_id, origin=other) == 403, other


async def test_the_https_origin_counts_as_ours_only_when_a_trusted_proxy_says_https(
    server: Server, browser: Browser
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    https_page = f"https://127.0.0.1:{server.port}"
    head = handshake_head(room_id, host_of(server), https_page, browser.cookie_header(), "X-Forwarded-Proto: https")
    assert (await raw_request(server.base_url, head, read_for=0))[0] == 101
    assert (await raw_request(server.base_url, head, source=PUBLIC, read_for=0))[0] == 403


# -- WebSocket transport (checklist 14, 18) -----------------------------------------


@pytest.mark.parametrize(("sent", "echoed"), [(1005, 1002), (1006, 1002), (1015, 1002), (999, 1002), (1000, 1000)])
async def test_a_close_code_no_endpoint_may_send_is_never_echoed(
    server: Server, browser: Browser, sent: int, echoed: int
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    reader, writer = await raw_websocket(server.base_url, room_id, browser.cookie_header())
    try:
        writer.write(client_frame(OP_CLOSE, struct.pack("!H", sent)))
        await writer.drain()
        while True:  # hello, history and presence come first
            opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
            if opcode == OP_CLOSE:
                break
    finally:
        writer.close()
    assert close_code(payload)[0] == echoed


async def test_permessage_deflate_is_never_negotiated(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    request = HTTPRequest(
        browser.socket_url(room_id), headers={"Cookie": browser.cookie_header(), "Origin": browser.origin}
    )
    conn = await websocket_connect(request, compression_options={})  # offers permessage-deflate
    try:
        assert "Sec-WebSocket-Extensions" not in conn.headers
    finally:
        conn.close()


async def test_the_frame_limit_is_explicit_64_kib(browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.conn.write_message(json.dumps({"type": "send", "client_id": "c", "body": "x" * 64_000}))
    assert (await sock.recv_type("error"))["code"] == "too_large"  # under 64 KiB: an answer, not a close
    await sock.conn.write_message("y" * (64 * 1024 + 1))
    assert await sock.closed() == 1009


# -- XSS (checklist 19) --------------------------------------------------------------


async def test_markup_in_room_names_and_usernames_stays_text(browser: Browser) -> None:
    await browser.register()
    name = f"<img src=x onerror=alert(1)> {uuid.uuid4().hex[:4]}"
    room_id = await browser.create_room(name)
    for path in ("/rooms", f"/rooms/{room_id}"):
        page = (await browser.get(path)).body.decode()
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page, path


# -- client address (checklist 23; finding 8) -----------------------------------------


async def test_forwarding_headers_count_only_from_the_trusted_proxy(server: Server) -> None:
    spoofed = "X-Real-IP: 203.0.113.9\r\nX-Forwarded-For: 203.0.113.9"
    probes = {}
    for source in ("127.0.0.1", PUBLIC):
        probe = uuid.uuid4().hex
        head = f"GET /login?probe={probe} HTTP/1.1\r\nHost: {host_of(server)}\r\n{spoofed}\r\nConnection: close"
        await raw_request(server.base_url, head, source=source)
        probes[source] = probe

    def logged_ip(probe: str) -> str | None:
        match = re.search(rf"GET /login\?probe={probe} \(([^)]+)\)", server.logs())
        return match.group(1) if match else None

    await eventually(lambda: all(logged_ip(p) for p in probes.values()), 5, "the probes in the access log")
    assert logged_ip(probes["127.0.0.1"]) == "203.0.113.9"  # nginx said so, and nginx is trusted
    assert logged_ip(probes[PUBLIC]) == PUBLIC  # anyone else is taken at their own address


# -- health probes (finding 8) ----------------------------------------------------------


async def test_health_probes_tell_the_public_only_that_the_process_is_up(server: Server) -> None:
    for path in ("/healthz", "/readyz"):
        head = f"GET {path} HTTP/1.1\r\nHost: {host_of(server)}\r\nConnection: close"
        status, _, body = await raw_request(server.base_url, head, source=PUBLIC)
        assert (status, json.loads(body)) == (200, {"status": "ok"}), path
        status, _, body = await raw_request(server.base_url, head)  # the deployment's own machine
        details = json.loads(body)
        assert status == 200 and details["instance"] == f"127.0.0.1:{server.port}", path
    assert details["checks"] == {"database": "ok", "broker": "ok"}


# -- hostile input (finding 5; checklist 15) ------------------------------------------


async def test_a_sync_since_2_to_the_63_is_an_error_frame_and_the_socket_stays_usable(
    server: Server, browser: Browser
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    for since in (2**63, 2**64, 2**53):
        await sock.send_json({"type": "sync", "since": since})
        assert (await sock.recv_type("error"))["code"] == "bad_request"
    await sock.send_message("still here")
    assert (await sock.recv_type("ack"))["message"]["body"] == "still here"
    assert server.uncaught_errors() == []


async def test_cr_lf_in_next_never_reaches_the_location_header(server: Server, browser: Browser) -> None:
    hostile = "/rooms\r\nSet-Cookie: planted=1"
    page = await browser.get("/login?" + urlencode({"next": hostile}))
    assert page.code == 200 and 'name="next" value="/rooms"' in page.body.decode()
    username = await browser.register()
    signed_in = await browser.get("/login?" + urlencode({"next": hostile}))
    assert (signed_in.code, signed_in.headers["Location"]) == (302, "/rooms")
    await browser.logout()
    response = await browser.post(
        "/login", {"username": username, "password": "correct horse battery", "next": hostile}
    )
    assert response.code == 400 and "planted" not in str(response.headers)
    assert "chat_session" not in browser.cookies  # refused before a session was made
    assert server.uncaught_errors() == []


@pytest.mark.parametrize(
    "path",
    [
        "/static/chat.js%00.css",
        "/static/%00",
        "/static/chat.js%0d%0aX-Injected:%201",
        "/static/%1b[31m",
        "/static/..%2f..%2fchat%2fconfig.py",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/%5c..%5cREADME.md",
        "/static/%ff%fe",
        "/static/chat.js/",
        "/static/" + "a" * 5000,
        "/static/.",
    ],
)
async def test_odd_static_paths_get_a_4xx_never_a_500(server: Server, path: str) -> None:
    status, headers, _ = await raw_request(server.base_url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close")
    assert 400 <= status < 500, (path, status)
    assert "x-injected" not in headers
    assert server.uncaught_errors() == []


async def test_a_body_over_64_kib_is_refused_before_it_is_read(server: Server) -> None:
    # Finding 8: without nginx, ~100 MB bodies were read, and a 20 MiB
    # username came back in a 21 MB page.
    head = (
        f"POST /register HTTP/1.1\r\nHost: {host_of(server)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 104857600\r\nConnection: close"
    )
    status, _, _ = await raw_request(server.base_url, head)  # the body never comes: not waited for
    assert status == 400
    body = urlencode({"username": "u" * 70_000, "password": "p" * 12, "confirm": "p" * 12}).encode()
    head = head.replace("104857600", str(len(body)))
    status, _, page = await raw_request(server.base_url, head, body)
    assert status == 413 and len(page) < 10_000  # read and thrown away, never handled


async def test_a_form_over_the_limit_gets_a_page_that_says_so_and_does_nothing(
    browser: Browser, new_browser: Callable
) -> None:
    # Second review, finding 12: the connection used to be closed, which a browser shows as a reset.
    username = f"big_{uuid.uuid4().hex[:6]}"
    form = {"username": username, "password": "p" * 12, "confirm": "p" * 12, "padding": "x" * 100_000}
    response = await browser.post("/register", form)

    assert response.code == 413
    assert response.headers["Content-Type"].startswith("text/html")
    assert "more than a form can send (at most 64 KiB)" in response.body.decode()
    assert (await new_browser().login(username, "p" * 12)).code == 400  # nothing was registered
    assert (await browser.get("/login")).code == 200  # and the server carries on


async def test_a_long_field_under_the_body_limit_is_refused_without_being_echoed(browser: Browser) -> None:
    response = await browser.post("/register", {"username": "u" * 60_000, "password": "p" * 12, "confirm": "p" * 12})
    assert response.code == 400 and len(response.body) < 10_000


@pytest.mark.parametrize("username", ["bad\x00name", "bad\r\nname", "bad\x1bname", "bad\x7fname"])
async def test_control_characters_in_usernames_are_refused(browser: Browser, username: str) -> None:
    response = await browser.post("/register", {"username": username, "password": "p" * 12, "confirm": "p" * 12})
    assert response.code == 400 and "chat_session" not in browser.cookies


@pytest.mark.parametrize("name", ["room\x00", "room\r\nname", "room\x1b[31m", "room\u0085"])
async def test_control_characters_in_room_names_are_refused(browser: Browser, name: str) -> None:
    await browser.register()
    response = await browser.post("/rooms", {"name": name})
    assert response.code == 400 and "Location" not in response.headers


async def test_a_repeated_error_is_logged_once(server: Server, browser: Browser) -> None:
    await browser.register()
    room_id = await browser.create_room()
    for _ in range(20):
        assert await handshake_status(browser, room_id, origin="https://evil.example") == 403
    refusals = [line for line in server.logs().splitlines() if f"/rooms/{room_id}/ws" in line and "origin" in line]
    assert len(refusals) == 1, refusals


# -- NoSQL injection (checklist 24), on both backends -----------------------------------


async def test_operator_shaped_form_fields_get_400_and_no_session(
    chat_server: Server, open_browser: Callable[[str], Browser]
) -> None:
    victim = open_browser(chat_server.base_url)
    username = await victim.register()
    attacker = open_browser(chat_server.base_url)
    attempts = [
        ("/login", {"username[$ne]": "x", "password[$ne]": "x"}),
        ("/login", {"username": username, "password[$ne]": ""}),
        ("/login", {"username": username, "password[$regex]": "^c"}),
        ("/login", {"username": username, "password": "x", "$where": "sleep(5000)"}),
        ("/register", {"username[$gt]": "", "password": "p" * 12, "confirm": "p" * 12}),
    ]
    for path, form in attempts:
        response = await attacker.post(path, form)
        assert response.code == 400, (path, form, response.code)
        assert "chat_session" not in attacker.cookies

    # A JSON body is not a form: its operators are never read.
    token = attacker.xsrf_token() or ""
    for payload in ({"username": username, "password": {"$ne": ""}}, {"username": {"$gt": ""}, "password": "x"}):
        response = await attacker.request(
            "POST", "/login", json.dumps(payload), {"Content-Type": "application/json", "X-XSRFToken": token}
        )
        assert response.code == 400 and "chat_session" not in attacker.cookies

    await victim.register()  # a room lookup by operator finds nothing either
    for path in ("/rooms/%7B%22%24ne%22%3Anull%7D", "/rooms/$ne", "/rooms/%24where"):
        assert (await victim.get(path)).code == 404, path


async def test_operator_shaped_frames_get_error_frames_and_store_nothing(
    chat_server: Server, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(chat_server.base_url)
    await browser.register()
    room_id = await browser.create_room()
    sock = await browser.socket(room_id)
    await sock.join()
    for frame in (
        {"type": "send", "client_id": "c1", "body": {"$ne": ""}},
        {"type": "send", "client_id": "c2", "body": {"$regex": "^a"}},
        {"type": "send", "client_id": "c3", "body": "hi", "$where": "sleep(5000)"},
        {"type": "send", "client_id": "c4", "body": "hi", "room": {"$ne": None}},
        {"type": "send", "client_id": {"$gt": ""}, "body": "hi"},
        {"type": "sync", "since": {"$gt": 0}},
        {"$where": "sleep(5000)"},
    ):
        await sock.send_json(frame)
        assert (await sock.recv_type("error"))["code"] == "bad_request", frame
    await sock.send_json({"type": "sync", "since": 0})
    assert (await sock.recv_type("history"))["messages"] == []
    assert chat_server.uncaught_errors() == []


# -- every route, every method (second review, finding 5) -----------------------

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def concrete_paths(room_id: str, username: str) -> list[str]:
    """A path for every entry of the URL table (each alternative of a choice), so a new route is swept too."""
    from chat.app import ROOM_ID, USERNAME, routes

    paths = []
    for pattern, _ in routes():
        path = pattern.replace(ROOM_ID, room_id).replace(USERNAME, username)
        choice = re.search(r"\(([a-z|-]+)\)", path)
        alternatives = choice.group(1).split("|") if choice else [""]
        paths += [path.replace(choice.group(0), alternative) if choice else path for alternative in alternatives]
    return paths


async def test_every_route_answers_every_method_without_a_500(
    server: Server, browser: Browser, new_browser: Callable
) -> None:
    await browser.register()
    room_id = await browser.create_room()
    other = await new_browser().register()
    stranger: Browser = new_browser()
    await stranger.get("/login")  # an XSRF cookie, so its POSTs get past the token check
    answers: dict[tuple[str, str, str], int] = {}
    for path in concrete_paths(room_id, other):
        for method in METHODS:
            for who, client in (("member", browser), ("stranger", stranger)):
                if path == "/logout" and method == "POST":
                    continue  # would sign the member out mid-sweep (its own tests cover it)
                body = urlencode({"_xsrf": client.xsrf_token() or ""}) if method in ("POST", "PUT", "PATCH") else None
                response = await client.request(method, path, body=body)
                answers[(who, method, path)] = response.code
    failed = {key: code for key, code in answers.items() if code >= 500}
    assert not failed, failed
    assert not server.uncaught_errors()


@pytest.mark.parametrize(
    "path",
    [
        "/account/password",
        "/account/sign-out-others",
        "/rooms/{room}/join",
        "/rooms/{room}/leave",
        "/rooms/{room}/invite",
        "/rooms/{room}/remove",
        "/rooms/{room}/ban",
        "/rooms/{room}/topic",
        "/rooms/{room}/rename",
        "/rooms/{room}/role",
        "/admin/disable",
        "/admin/enable",
        "/logout",
    ],
)
async def test_a_get_of_a_form_action_is_405_and_says_post(browser: Browser, path: str) -> None:
    await browser.register()
    room_id = await browser.create_room()
    response = await browser.get(path.format(room=room_id))
    assert response.code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("path", ["/account", "/admin"])
async def test_a_post_to_a_page_without_a_form_is_405(browser: Browser, path: str) -> None:
    await browser.register()
    response = await browser.post(path, {})
    assert response.code == 405
    assert "POST" not in response.headers["Allow"]


async def test_monitors_get_200_to_head_where_get_answers(browser: Browser, new_browser: Callable) -> None:
    anonymous: Browser = new_browser()
    for path in ("/login", "/register", "/healthz", "/readyz", "/static/chat.css"):
        response = await anonymous.request("HEAD", path)
        assert (response.code, response.body) == (200, b""), path
    await browser.register()
    room_id = await browser.create_room()
    for path in ("/rooms", f"/rooms/{room_id}", "/account"):
        get, head = await browser.get(path), await browser.request("HEAD", path)
        assert (head.code, head.body) == (200, b""), path
        assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert (await anonymous.request("HEAD", "/rooms")).code == 302  # as GET: sign in first


async def test_the_admin_page_is_not_found_for_anyone_but_an_administrator(
    browser: Browser, new_browser: Callable
) -> None:
    anonymous: Browser = new_browser()
    for path in ("/admin", "/admin/disable"):
        response = await (anonymous.get(path) if path == "/admin" else anonymous.post(path, {"username": "x"}))
        assert response.code == 404, path  # not a redirect to sign in: the page is nobody else's business
    await browser.register()
    assert (await browser.get("/admin")).code == 404
    assert (await browser.post("/admin/disable", {"username": "x"})).code == 404


async def test_a_client_without_nginx_in_front_cannot_hold_connections_with_partial_requests(
    server_factory: ServerFactory,
) -> None:
    # Second review, finding 12: a process port held a partial request for 120 s, and 2,000 of them at once.
    server = server_factory(**FAST, CHAT_MAX_CONNECTIONS_PER_IP="5", CHAT_HEADER_TIMEOUT_SECONDS="1")
    port = server.port
    partial = f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()  # never finished

    async def connect(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(partial)
        await writer.drain()
        return reader, writer

    held = [await connect(PUBLIC) for _ in range(5)]
    trusted = await connect("127.0.0.1")  # the proxy (nginx) has its own limits and timeouts
    one_too_many_reader, one_too_many = await connect(PUBLIC)
    with contextlib.suppress(ConnectionResetError):  # closed with the request unread: a reset
        assert await asyncio.wait_for(one_too_many_reader.read(), 5) == b""  # closed at once
    one_too_many.close()

    started = asyncio.get_running_loop().time()
    for reader, writer in held:
        assert await asyncio.wait_for(reader.read(), 5) in (b"", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()
    assert asyncio.get_running_loop().time() - started < 3  # cut after the header timeout, not 120 s

    trusted_reader, trusted_writer = trusted
    with pytest.raises(TimeoutError):  # the trusted proxy's connection is left alone
        await asyncio.wait_for(trusted_reader.read(1), 1)
    trusted_writer.close()
    status, _, _ = await raw_request(
        server.base_url, f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close", source=PUBLIC
    )
    assert status == 200  # the client's places are free again
