"""Property-based fuzzing (Hypothesis) of client frames, query strings and form fields.

Against one real server process. Whatever is sent: no 500, no uncaught
exception in the server's log, and a socket either stays usable (a probe
frame sent after the hostile one is answered) or is closed with a code
docs/protocol.md documents. Example counts are modest so the suite stays
fast; a failure prints the smallest input that breaks the property.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.wire.refusals import Close, ErrorCode
from chat.wire.text import MAX_SAFE_INTEGER
from tests.support.client import Browser, RoomSocket, raw_request
from tests.support.logs import add_log_source
from tests.support.server import SHARED_SERVER_ENV, InProcessServer, Server

FUZZ = settings(
    max_examples=100,
    deadline=None,
    # One server and one signed-in session serve every example of a test.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SERVER_FRAMES = {"hello", "history", "message", "ack", "presence", "error"}
# Close codes a hostile frame may legitimately earn (docs/protocol.md);
# 1011 would mean a bug.
DOCUMENTED_CLOSES = {Close.SESSION_ENDED, Close.TOO_BIG, Close.TRY_AGAIN_LATER}

# -- strategies -------------------------------------------------------------------

# Every character, lone surrogates and control characters included.
any_char = st.characters(exclude_categories=())
# Characters that have broken parsers, headers, encoders and queries somewhere.
CONTROLS = ["\x00", "\r", "\n", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ud800", "\udfff", "\ufeff"]
specials = st.sampled_from(
    [*CONTROLS, "$", ".", "[", "]", "{", "}", '"', "\\", "/", "%", "<", ">", "&", "é", "\U0001f600"]
)
hostile_text = st.one_of(
    st.text(st.one_of(specials, any_char), max_size=40),
    st.text(specials, min_size=1, max_size=8),
    st.sampled_from(["$ne", "$where", "$gt", "__proto__", "constructor", "null", "", "//evil.example", "/\t/x"]),
)
# The boundaries are where bugs live (2^63 overflowed SQLite): drawn twice as often as the rest.
boundaries = st.sampled_from(
    [MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**63 - 1, 2**63, 2**64, 10**20, -1, -(2**63) - 1, 0]
)
big_ints = st.one_of(boundaries, boundaries, st.integers(min_value=-(2**70), max_value=2**70))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), big_ints, st.floats(allow_nan=True), hostile_text),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)),
    max_leaves=12,
)
# Frames shaped like ours with one part hostile get furthest into the
# server, so each kind has a property of its own; a third sends anything.
sync_frames = st.fixed_dictionaries(
    {"type": st.just("sync"), "since": st.one_of(big_ints, big_ints, json_values)},
    optional={"client_id": hostile_text},
)
send_frames = st.fixed_dictionaries(
    {
        "type": st.just("send"),
        "client_id": st.one_of(st.uuids().map(str), st.uuids().map(str), hostile_text, json_values),
        "body": st.one_of(hostile_text, hostile_text, json_values),
    }
)
frame_like = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["send", "sync"]), json_values)},
    optional={
        "client_id": st.one_of(hostile_text, json_values),
        "body": st.one_of(hostile_text, json_values),
        "since": st.one_of(big_ints, json_values),
        "$where": json_values,
        "room_id": json_values,
    },
)


def as_json_text(value: Any) -> str:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a hostile client would send them.
    return json.dumps(value, ensure_ascii=True)


any_frames = st.one_of(
    frame_like.map(as_json_text),
    json_values.map(as_json_text),
    st.text(any_char, max_size=200).filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=60).map(lambda depth: "[" * depth * 100),
)

# -- the shared server and session ------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {**SHARED_SERVER_ENV, "CHAT_BCRYPT_ROUNDS": "4"}
    with InProcessServer(f"sqlite:///{tmp}/chat.sqlite3", tmp, **env) as started:
        yield started


@dataclass
class Session:
    """A signed-in browser with a room and an open socket in it, shared by a test's examples."""

    browser: Browser
    room_id: str
    sock: RoomSocket | None = None
    probes: int = field(default=0)

    async def socket(self) -> RoomSocket:
        if self.sock is None or self.sock.conn.close_code is not None:
            self.sock = await self.browser.socket(self.room_id, since=MAX_SAFE_INTEGER)
            await self.sock.join()
        return self.sock


_sessions: dict[int, Session] = {}


async def session_on(server: Server) -> Session:
    """This test's session (examples of one test share its event loop); made on first use."""
    key = id(asyncio.get_running_loop())
    if key not in _sessions:
        browser = Browser(server.base_url)
        await browser.register()
        _sessions[key] = Session(browser, await browser.create_room())
    return _sessions[key]


@pytest.fixture(autouse=True)
async def _close_sessions(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[None]:
    add_log_source(request, f"fuzzed server {server.port}", server.logs)
    yield
    for session in _sessions.values():
        session.browser.close_sockets()
    _sessions.clear()
    assert server.uncaught_errors() == []


# -- properties ---------------------------------------------------------------------


async def assert_handled(server: Server, frame: str | bytes) -> None:
    """Send ``frame``, then a probe: the probe is answered, or the socket closed with a documented code."""
    session = await session_on(server)
    sock = await session.socket()
    session.probes += 1
    probe = f"probe-{session.probes}"
    await sock.conn.write_message(frame, binary=isinstance(frame, bytes))
    # Frames are handled in order: once the probe is answered, the hostile
    # frame was handled, and the socket still works.
    await sock.conn.write_message(json.dumps({"type": "probe", "client_id": probe}))
    while True:
        raw = await asyncio.wait_for(sock.conn.read_message(), 10)
        if raw is None:
            assert sock.conn.close_code in DOCUMENTED_CLOSES, (frame, sock.conn.close_code, sock.conn.close_reason)
            return
        answer = json.loads(raw)
        assert answer["type"] in SERVER_FRAMES, answer
        if answer["type"] == "error":
            assert answer["code"] in set(ErrorCode), answer
            if answer.get("client_id") == probe:
                return


@FUZZ
@given(frame=sync_frames.map(as_json_text))
async def test_no_sync_frame_breaks_the_socket_or_the_server(server: Server, frame: str) -> None:
    await assert_handled(server, frame)


@FUZZ
@given(frame=send_frames.map(as_json_text))
async def test_no_send_frame_breaks_the_socket_or_the_server(server: Server, frame: str) -> None:
    await assert_handled(server, frame)


@FUZZ
@given(frame=any_frames)
async def test_no_frame_at_all_breaks_the_socket_or_the_server(server: Server, frame: str | bytes) -> None:
    await assert_handled(server, frame)


@FUZZ
@given(since=st.one_of(hostile_text, big_ints.map(str), st.text("0123456789+-.eE_ ", max_size=30)))
async def test_no_since_on_the_handshake_gets_a_500(server: Server, since: str) -> None:
    session = await session_on(server)
    path = f"/rooms/{session.room_id}/ws?since={quote(since, safe='', errors='surrogatepass')}"
    response = await session.browser.request("GET", path, headers={"Origin": session.browser.origin})
    # Not an upgrade, so the best a good since gets is Tornado's 400 "Can Upgrade only to WebSocket".
    assert response.code in (400, 403), (since, response.code)


@FUZZ
@given(
    path=st.sampled_from(["/login", "/rooms", "/", "/register", "/static/chat.js", "/rooms/x", "/healthz"]),
    query=st.lists(st.tuples(hostile_text, hostile_text), max_size=4),
    next_url=hostile_text,
)
async def test_no_query_string_gets_a_500_or_reaches_a_header(
    server: Server, path: str, query: list[tuple[str, str]], next_url: str
) -> None:
    session = await session_on(server)
    pairs = [*query, ("next", "/" + next_url)]
    target = path + "?" + urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    for browser in (session.browser, Browser(server.base_url)):  # signed in, and a stranger
        response = await browser.get(target)
        assert response.code < 500, (target, response.code)
        for value in response.headers.get_list("Location"):
            assert "\r" not in value and "\n" not in value and not value.startswith("//"), value


@FUZZ
@given(
    next_url=st.tuples(
        st.sampled_from(["/", "", "//", "/\\", "http:", "/rooms"]),
        st.text(st.sampled_from([*CONTROLS, "/", "\\", ":", "@", ".", "x"]), max_size=12),
    ).map("".join)
)
async def test_no_next_reaches_the_location_header_unsafely(server: Server, next_url: str) -> None:
    # What breaks a redirect: line breaks, tabs, slashes and backslashes.
    session = await session_on(server)
    target = "/login?" + urlencode({"next": next_url}, encoding="utf-8", errors="surrogatepass")
    response = await session.browser.get(target)  # signed in: redirected to next
    assert response.code in (302, 400), (next_url, response.code)
    if response.code == 302:
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert not any(c in location for c in "\r\n\t\\"), location


@FUZZ
@given(segment=st.binary(min_size=1, max_size=60))
async def test_no_path_gets_a_500(server: Server, segment: bytes) -> None:
    encoded = quote(segment, safe="/")
    for prefix in ("/static/", "/rooms/", "/"):
        status, _, _ = await raw_request(
            server.base_url, f"GET {prefix}{encoded} HTTP/1.1\r\nHost: x\r\nConnection: close", read_for=0
        )
        assert status < 500, (prefix + encoded, status)


form_fields = st.dictionaries(
    st.one_of(
        st.sampled_from(["username", "password", "confirm", "next", "name", "username[$ne]", "$where", "user.name"]),
        hostile_text,
    ),
    st.one_of(hostile_text, st.binary(max_size=30).map(lambda b: b.decode("latin-1"))),
    max_size=5,
)


@FUZZ
@given(path=st.sampled_from(["/login", "/register", "/rooms", "/logout"]), fields=form_fields)
async def test_no_form_gets_a_500(server: Server, path: str, fields: dict[str, str]) -> None:
    session = await session_on(server)
    stranger = Browser(server.base_url)
    for browser in (session.browser, stranger):
        data = {**fields, "_xsrf": browser.xsrf_token() or ""}
        if not data["_xsrf"]:
            await browser.get("/login")
            data["_xsrf"] = browser.xsrf_token() or ""
        body = urlencode(data, encoding="utf-8", errors="surrogatepass")
        response = await browser.request(
            "POST", path, body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.code in (200, 302, 400, 403, 409), (path, fields, response.code)
        if response.code == 302 and path != "/logout":
            assert "\r" not in response.headers["Location"] and "\n" not in response.headers["Location"]
    if path == "/logout":
        await session.browser.register()  # signed out by the example: sign in again for the next


async def test_the_fuzzers_reach_the_parser_at_all(server: Server) -> None:
    # Guards the properties above: a valid frame sent the same way is acked,
    # so the socket the fuzzers use really talks to the room.
    session = await session_on(server)
    sock = await session.socket()
    client_id = uuid.uuid4().hex
    await sock.conn.write_message(json.dumps({"type": "send", "client_id": client_id, "body": "fuzz check"}))
    assert (await sock.acked(client_id))["body"] == "fuzz check"
