"""Parsing client frames and building server frames."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import re
from pathlib import Path

import pytest

from chat.errors import ChatError, Conflict, Forbidden, NotFound, RateLimited, SessionEnded, TooLarge, Unavailable
from chat.models import Message, Room, User
from chat.wire.client import (
    FETCH_DEFAULT_LIMIT,
    FRAME_TYPES,
    DeleteFrame,
    EditFrame,
    FetchFrame,
    SendFrame,
    SyncFrame,
    TypingFrame,
    frame_type_of,
    parse_client_frame,
)
from chat.wire.events import Routing, frame_routing
from chat.wire.refusals import Close, ErrorCode, ProtocolError, refusal_for
from chat.wire.server import (
    ack_frame,
    error_frame,
    error_frame_for,
    hello_frame,
    history_frame,
    message_frame,
    message_frame_of_update,
    message_updated_frame,
    older_history_frame,
    typing_frame,
    updates_frame,
)
from chat.wire.text import MAX_SAFE_INTEGER

MOMENT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.UTC)
USER = User(id="u1", username="alice", password_hash=b"secret-hash", created_at=MOMENT)
ROOM = Room(id="r1", name="Lobby", creator_id="u1", creator_username="alice", created_at=MOMENT, last_seq=7)


def message(seq: int = 3, client_id: str = "c-1") -> Message:
    return Message(
        id="m1",
        room_id="r1",
        seq=seq,
        user_id="u1",
        username="alice",
        body="héllo <b>",
        created_at=MOMENT,
        client_id=client_id,
    )


def bad_request(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(text)
    assert caught.value.code == "bad_request"
    assert caught.value.message
    return caught.value


# -- parsing -----------------------------------------------------------------


def test_a_send_frame_parses() -> None:
    frame = parse_client_frame('{"type":"send","client_id":"c-1","body":"hi"}')

    assert frame == SendFrame(client_id="c-1", body="hi")


def test_a_send_frame_keeps_its_body_untouched() -> None:
    # Trimming and length rules belong to the Messages service, not the parser.
    frame = parse_client_frame(json.dumps({"type": "send", "client_id": "c", "body": "  ünïcode \n"}))

    assert frame == SendFrame(client_id="c", body="  ünïcode \n")


def test_a_sync_frame_parses() -> None:
    assert parse_client_frame('{"type":"sync","since":42}') == SyncFrame(since=42)
    assert parse_client_frame('{"type":"sync","since":0}') == SyncFrame(since=0)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "sync", "since": 1, "extra": True},
        {"type": "send", "client_id": "c-1", "body": "hi", "room_id": "another-room"},
        {"type": "send", "client_id": "c-1", "body": "hi", "user_id": "someone-else"},
    ],
)
def test_unknown_fields_are_rejected_by_the_schema(frame: dict[str, object]) -> None:
    # Strict, so a field a later version adds is never silently taken as
    # something else, and spoofed room or user ids are refused, not ignored.
    error = bad_request(json.dumps(frame))

    assert "unknown field" in error.message


def test_the_largest_safe_integer_is_a_valid_since_and_one_more_is_not() -> None:
    assert parse_client_frame(json.dumps({"type": "sync", "since": MAX_SAFE_INTEGER})) == SyncFrame(MAX_SAFE_INTEGER)
    assert MAX_SAFE_INTEGER == 2**53 - 1


@pytest.mark.parametrize("since", [2**53, 2**63, 2**64 + 1, 10**30, -(2**63)])
def test_a_since_out_of_range_is_rejected_before_storage_sees_it(since: int) -> None:
    # 2^63 used to reach SQLite, which raised OverflowError and dropped the socket.
    assert "9007199254740991" in bad_request(json.dumps({"type": "sync", "since": since})).message


def test_a_number_with_thousands_of_digits_is_bad_json_not_a_crash() -> None:
    bad_request('{"type":"sync","since":' + "9" * 5000 + "}")


@pytest.mark.parametrize(
    "body", [r"nul\u0000byte", r"escape\u001b[31m", r"del\u007f", r"c1\u0085", r"lone \ud800 half"]
)
def test_control_characters_and_lone_surrogates_in_a_body_are_rejected(body: str) -> None:
    # The body is written into the JSON text as an escape, as a client would.
    error = bad_request('{"type":"send","client_id":"c-1","body":"' + body + '"}')

    assert error.client_id == "c-1"


def test_tabs_and_line_breaks_in_a_body_are_text() -> None:
    frame = parse_client_frame(json.dumps({"type": "send", "client_id": "c", "body": "a\tb\r\nc\nd"}))

    assert frame == SendFrame(client_id="c", body="a\tb\r\nc\nd")


# Checklist item 24: operator objects and operator keys never get past the
# parser, so no storage query is ever built from them.
@pytest.mark.parametrize(
    "frame",
    [
        {"type": "send", "client_id": "c-1", "body": {"$ne": ""}},
        {"type": "send", "client_id": "c-1", "body": {"$gt": ""}},
        {"type": "send", "client_id": "c-1", "body": {"$regex": "^a"}},
        {"type": "send", "client_id": "c-1", "body": "hi", "$where": "sleep(5000)"},
        {"type": "send", "client_id": {"$ne": None}, "body": "hi"},
        {"type": "send", "client_id": "c-1", "body": "hi", "room": {"$ne": None}},
        {"type": "send", "client_id": "c-1", "body": "hi", "body.x": "hi"},
        {"type": "sync", "since": {"$gt": 0}},
        {"type": "sync", "since": {"$where": "sleep(5000)"}},
        {"type": {"$ne": None}, "since": 0},
        {"$where": "sleep(5000)"},
    ],
)
def test_operator_objects_and_operator_keys_are_rejected(frame: dict[str, object]) -> None:
    bad_request(json.dumps(frame))


def test_binary_frames_are_rejected() -> None:
    error = bad_request(b'{"type":"sync","since":0}')

    assert "binary" in error.message


@pytest.mark.parametrize("text", ["", "not json", "{", '{"type":"send"', "[" * 100_000])
def test_invalid_json_is_rejected(text: str) -> None:
    bad_request(text)


@pytest.mark.parametrize("text", ["[]", '"send"', "42", "null", "true"])
def test_a_frame_that_is_not_an_object_is_rejected(text: str) -> None:
    bad_request(text)


def test_an_unknown_type_is_rejected_carrying_the_client_id() -> None:
    error = bad_request('{"type":"shout","client_id":"c-1"}')

    assert error.client_id == "c-1"
    assert "shout" in error.message


def test_a_frame_without_a_type_is_rejected() -> None:
    assert bad_request('{"client_id":"c-1","body":"hi"}').client_id == "c-1"


@pytest.mark.parametrize("client_id", [None, "", "x" * 65, 17, ["c"], "tab\there", "new\nline"])
def test_a_send_without_a_valid_client_id_is_rejected_without_one(client_id: object) -> None:
    frame: dict[str, object] = {"type": "send", "body": "hi"}
    if client_id is not None:
        frame["client_id"] = client_id

    error = bad_request(json.dumps(frame))

    assert error.client_id is None


def test_a_client_id_of_exactly_64_characters_is_accepted() -> None:
    frame = parse_client_frame(json.dumps({"type": "send", "client_id": "x" * 64, "body": "hi"}))

    assert frame == SendFrame(client_id="x" * 64, body="hi")


@pytest.mark.parametrize("body", [None, 5, ["hi"], {"text": "hi"}, True])
def test_a_send_with_a_non_string_body_is_rejected_carrying_the_client_id(body: object) -> None:
    frame = {"type": "send", "client_id": "c-1"}
    if body is not None:
        frame["body"] = body

    assert bad_request(json.dumps(frame)).client_id == "c-1"


@pytest.mark.parametrize("since", [-1, True, False, "3", 1.5, None, float("nan"), float("inf")])
def test_a_sync_with_a_bad_since_is_rejected(since: object) -> None:
    error = bad_request(json.dumps({"type": "sync", "since": since, "client_id": "c-9"}))

    assert error.client_id == "c-9"


def test_a_sync_without_since_is_rejected() -> None:
    assert bad_request('{"type":"sync"}').client_id is None


# -- building ----------------------------------------------------------------


def test_hello_frame_has_room_user_instance_and_last_seq() -> None:
    frame = json.loads(hello_frame(ROOM, USER, "host:1", 7))

    assert frame == {
        "type": "hello",
        "room": {"id": "r1", "name": "Lobby"},
        "user": {"id": "u1", "username": "alice"},
        "instance": "host:1",
        "last_seq": 7,
    }


def test_hello_frame_never_leaks_the_password_hash() -> None:
    assert "secret-hash" not in hello_frame(ROOM, USER, "host:1", 7)


def test_message_wire_format_has_every_documented_key() -> None:
    assert message().to_wire() == {
        "id": "m1",
        "room_id": "r1",
        "seq": 3,
        "user_id": "u1",
        "username": "alice",
        "body": "héllo <b>",
        "created_at": "2024-05-06T07:08:09.123Z",
        "client_id": "c-1",
        "rev": 0,
        "edited_at": None,
        "deleted_at": None,
        "html": "",
    }


def test_history_frame_lists_messages_and_has_more() -> None:
    frame = json.loads(history_frame([message(1), message(2)], True))

    assert frame["type"] == "history"
    assert [m["seq"] for m in frame["messages"]] == [1, 2]
    assert frame["messages"][0] == message(1).to_wire()
    assert frame["has_more"] is True


def test_an_empty_history_frame() -> None:
    assert json.loads(history_frame([], False)) == {"type": "history", "messages": [], "has_more": False}


def test_message_frame_wraps_the_message() -> None:
    assert json.loads(message_frame(message())) == {"type": "message", "message": message().to_wire()}


def test_ack_frame_carries_client_id_and_message() -> None:
    frame = json.loads(ack_frame(message(client_id="c-5")))

    assert frame == {"type": "ack", "client_id": "c-5", "message": message(client_id="c-5").to_wire()}


def test_error_frame_with_and_without_client_id() -> None:
    assert json.loads(error_frame("too_large", "too big", "c-1")) == {
        "type": "error",
        "code": "too_large",
        "message": "too big",
        "client_id": "c-1",
    }
    assert json.loads(error_frame("bad_request", "nope")) == {
        "type": "error",
        "code": "bad_request",
        "message": "nope",
    }


def test_frames_are_compact_utf8_json() -> None:
    text = message_frame(message())

    assert "héllo" in text  # not \u-escaped
    assert ": " not in text and ", " not in text


def test_frame_routing_reads_the_type_and_seq_of_a_message_frame() -> None:
    assert frame_routing(message_frame(message(seq=12))) == ("message", 12, None, None)


def test_frame_routing_reads_the_seq_and_rev_of_a_revised_message() -> None:
    revised = dataclasses.replace(message(seq=12), body="fixed", rev=4)
    assert frame_routing(message_updated_frame(revised)) == ("message_updated", 12, None, 4)


@pytest.mark.parametrize(
    "frame",
    [
        ack_frame(message()),
        error_frame("bad_request", "x"),
        history_frame([message()], False),
        '{"type":"presence"}',
    ],
)
def test_frame_routing_gives_no_seq_for_other_frames(frame: str) -> None:
    kind, seq, _, rev = frame_routing(frame)
    assert seq is None and rev is None and kind == json.loads(frame)["type"]


# -- the one exception table ---------------------------------------------------


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (ProtocolError("bad"), 400, "bad_request"),
        (TooLarge("big"), 413, "too_large"),
        (Conflict("taken"), 409, "bad_request"),
        (NotFound("gone"), 404, "bad_request"),
        (SessionEnded("signed out"), 403, "forbidden"),
        (Forbidden("no"), 403, "forbidden"),
        (RateLimited(1.5), 429, "rate_limited"),
        (Unavailable("db-7 refused"), 503, "unavailable"),
    ],
)
def test_every_error_we_raise_has_one_status_and_one_code(exc: ChatError, status: int, code: str) -> None:
    refusal = refusal_for(exc)

    assert refusal is not None and (refusal.status, refusal.code) == (status, code)


def test_anything_else_is_a_bug_with_no_refusal() -> None:
    assert refusal_for(RuntimeError("boom")) is None
    assert refusal_for(KeyError("x")) is None


def test_an_outage_never_shows_its_internals_to_the_client() -> None:
    exc = Unavailable("database host db-7 refused the connection")
    refusal = refusal_for(exc)
    assert refusal is not None

    frame = json.loads(error_frame_for(exc, refusal, "c-1"))

    assert frame["code"] == "unavailable" and "db-7" not in frame["message"] and frame["client_id"] == "c-1"


def test_a_rate_limited_error_says_how_long_to_wait_in_seconds() -> None:
    exc = RateLimited(retry_after=0.2)
    refusal = refusal_for(exc)
    assert refusal is not None

    frame = json.loads(error_frame_for(exc, refusal, None))

    assert frame["code"] == "rate_limited"
    assert isinstance(frame["retry_after"], float) and 0.2 <= frame["retry_after"] < 0.25
    assert "client_id" not in frame


def test_every_close_code_and_error_code_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()

    for close in Close:
        assert f"| {close.value}" in doc or f"/ {close.value} |" in doc, close
    for code in ErrorCode:
        assert f"| `{code.value}` |" in doc, code


def test_a_fetch_frame_parses_with_a_default_limit() -> None:
    assert parse_client_frame('{"type":"fetch","before":42}') == FetchFrame(before=42, limit=FETCH_DEFAULT_LIMIT)
    assert parse_client_frame('{"type":"fetch","before":1,"limit":100,"client_id":"c"}') == FetchFrame(1, 100, "c")


def test_the_answer_to_a_fetch_names_the_seq_it_answers() -> None:
    frame = json.loads(older_history_frame([], False, 7))
    assert frame == {"type": "history", "messages": [], "has_more": False, "before": 7}


def test_a_typing_notice_parses_and_is_routed_with_its_author() -> None:
    assert parse_client_frame('{"type":"typing"}') == TypingFrame()
    assert parse_client_frame('{"type":"typing","client_id":"t1"}') == TypingFrame("t1")
    notice = typing_frame(USER)
    assert json.loads(notice) == {"type": "typing", "user": {"id": "u1", "username": "alice"}}
    assert frame_routing(notice) == Routing("typing", author="u1")
    with pytest.raises(ProtocolError):
        parse_client_frame('{"type":"typing","body":"secret draft"}')


def test_edit_and_delete_name_a_message_and_edit_carries_a_body() -> None:
    assert parse_client_frame('{"type":"edit","id":"abc123","body":"fixed","client_id":"e1"}') == EditFrame(
        "abc123", "fixed", "e1"
    )
    assert parse_client_frame('{"type":"delete","id":"abc123"}') == DeleteFrame("abc123")
    assert parse_client_frame('{"type":"sync","since":3,"rev":9}') == SyncFrame(3, 9)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"edit","id":"abc","client_id":"e1"}',  # no body
        '{"type":"edit","id":{"$ne":""},"body":"x"}',  # an operator where an id belongs
        '{"type":"edit","id":"","body":"x"}',
        '{"type":"edit","id":"ab/../cd","body":"x"}',
        '{"type":"delete","id":"ab\u00e9"}',  # not ASCII
        '{"type":"delete","id":"abc","body":"x"}',  # delete takes no body
        '{"type":"edit","id":"abc","body":"a\u0000b"}',
        '{"type":"sync","since":1,"rev":-1}',
    ],
)
def test_malformed_edits_and_deletes_are_bad_requests(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_client_frame(text)


def test_message_updated_carries_the_message_as_it_is_now_and_updates_a_resume() -> None:
    deleted = dataclasses.replace(message(seq=4), body="", rev=7, deleted_at=message().created_at)
    frame = json.loads(message_updated_frame(deleted))
    assert frame == {"type": "message_updated", "message": deleted.to_wire()}
    remembered = message_frame_of_update(message_updated_frame(deleted))
    assert remembered == message_frame(deleted)
    assert json.loads(updates_frame([deleted], 9)) == {
        "type": "updates",
        "messages": [deleted.to_wire()],
        "last_rev": 9,
    }


# -- the catalogue: every frame and event declared, handled, documented, tested -------


def _documented_types() -> set[str]:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    return set(re.findall(r'\{"type": "(\w+)"', doc))


def _tested_types() -> set[str]:
    """Every word the tests name in quotes (a type they send or wait for: ``skip_to("membership")``)."""
    tests = Path(__file__).resolve().parents[1]
    found: set[str] = set()
    for path in tests.rglob("*.py"):
        found.update(re.findall(r"""["'](\w+)\\?["']""", path.read_text()))
    return found


def test_every_client_frame_type_is_declared_with_a_handler_documented_and_tested() -> None:
    from chat.services.realtime.connection import RoomConnection

    documented, tested = _documented_types(), _tested_types()
    for name, frame_type in FRAME_TYPES.items():
        handler = getattr(RoomConnection, frame_type.handler, None)
        assert handler is not None and inspect.iscoroutinefunction(handler), f"{name}: no {frame_type.handler}"
        assert frame_type_of(parse_client_frame(json.dumps(_a_valid(name)))) is frame_type
        assert name in documented, f"{name} is not in docs/protocol.md"
        assert name in tested, f"no test sends a {name} frame"


def _a_valid(name: str) -> dict[str, object]:
    examples: dict[str, dict[str, object]] = {
        "send": {"client_id": "c", "body": "hi"},
        "sync": {"since": 0},
        "fetch": {"before": 5},
        "typing": {},
        "edit": {"id": "abc", "body": "hi"},
        "delete": {"id": "abc"},
        "read": {"seq": 1},
    }
    return {"type": name, **examples[name]}


def test_every_server_frame_and_event_between_processes_is_documented_and_tested() -> None:
    built: set[str] = set()
    for module in ("server", "events"):
        source = (Path(__file__).resolve().parents[2] / "chat" / "wire" / f"{module}.py").read_text()
        built.update(re.findall(r'"type": "(\w+)"', source))
        built.update(re.findall(r"""'\{"type":"(\w+)\"""", source))
        built.update(value for _, value in re.findall(r'^([A-Z_]+) = "(\w+)"', source, re.M))
    documented, tested = _documented_types(), _tested_types()
    assert {"hello", "history", "message", "ack", "error", "presence", "member_removed", "sessions_ended"} <= built
    assert built <= documented, f"not in docs/protocol.md: {sorted(built - documented)}"
    assert built <= tested, f"no test reads: {sorted(built - tested)}"


def test_every_event_between_processes_reads_back_what_was_built() -> None:
    from chat.wire import events

    assert events.ended_sessions(events.sessions_ended_event(["k1", "k2"])) == {"k1", "k2"}
    assert events.changed_room(events.room_changed_event("r1")) == "r1"
    assert events.removed_user(events.member_removed_event("u1")) == "u1"
    assert frame_routing(events.control_event(events.PRESENCE_CHANGED)) == Routing("presence_changed")
    assert frame_routing(events.member_removed_event("u1")) == Routing("member_removed")
    assert json.loads(events.rooms_changed_event()) == {"type": "rooms_changed"}
    assert json.loads(events.read_event("r1", 7, 2)) == {"type": "read", "room_id": "r1", "read_seq": 7, "mentions": 2}
    assert json.loads(events.room_changed_event("r1")) == {"type": "room_changed", "room_id": "r1"}
    for not_sessions in ('{"type": "sessions_ended", "sessions": "k1"}', '{"type": "room_changed"}', "[]"):
        with pytest.raises(ValueError):
            events.ended_sessions(not_sessions)
    for not_a_room in ('{"type": "room_changed"}', '{"type": "room_changed", "room_id": 7}', "[]"):
        with pytest.raises(ValueError):
            events.changed_room(not_a_room)


def test_a_wait_is_rounded_up_the_same_way_everywhere() -> None:
    from chat.wire.refusals import retry_after_header, retry_after_seconds

    assert [retry_after_header(s) for s in (0.0, 0.2, 1.0, 1.01, 59.5)] == ["1", "1", "1", "2", "60"]
    assert [retry_after_seconds(s) for s in (0.201, 1.0, 2.499)] == [0.21, 1.0, 2.5]
