"""The wire: one parser per client frame, one builder per server frame, and every code on it.

``docs/protocol.md`` is the human-readable contract; this module is the
executable one. Frames are JSON text. Client frames are validated here, at the
edge, so the services below only ever see well-typed values. Close codes,
error codes and the HTTP status a refused request gets are defined here too,
so that the socket, the pages and the tools agree on them.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple, TypeGuard

from .errors import (
    ChatError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    ValidationError,
)
from .models import Message, OnlineUser, Room, User

MAX_CLIENT_ID_LENGTH = 64
# Message ids are 24 hex characters; anything longer is not one.
MAX_ID_LENGTH = 64
# A resume is sent at most this many revised messages; past it, the client reloads.
UPDATES_MAX = 500
# The largest integer a client may send (a seq): 2^53 - 1, the largest every
# JSON reader (JavaScript's included) holds exactly, and far inside the
# 64-bit integers SQLite and MongoDB store.
MAX_SAFE_INTEGER = 2**53 - 1
# A history frame never carries more than this many messages.
HISTORY_PAGE_SIZE = 500
# Scroll-back: messages per fetch when the client does not say, and at most.
FETCH_DEFAULT_LIMIT = 50
FETCH_MAX_LIMIT = 100


class Close(IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1; 1013 from the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect (elsewhere) and resume
    SESSION_ENDED = 1008  # policy violation: the session behind the socket ended; sign in again
    TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # storage unavailable, or the client read too slowly: back off, resume
    # Application codes (4000-4999, RFC 6455 section 7.4.2):
    REMOVED = 4403  # left, removed or banned: this room is no longer the client's; do not reconnect
    PROTOCOL_ERROR = 1002  # the client closed with a code no endpoint may send


def sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455 section 7.4, and the IANA registry).

    1004 is reserved, 1005, 1006 and 1015 only ever describe a close locally,
    other codes under 3000 are unassigned; 3000-4999 belong to libraries and
    applications.
    """
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame (docs/protocol.md lists when each is sent)."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Refusal:
    """How one kind of :class:`~chat.errors.ChatError` reaches a client."""

    status: int  # the HTTP status of a page or a refused handshake
    code: ErrorCode  # the code of an error frame on an open socket
    # Said instead of the exception's own text, which may name internals.
    public_message: str | None = None


# The one exception-to-answer table, for pages and sockets alike. Looked up by
# the exception's class hierarchy, most specific first.
REFUSALS: dict[type[BaseException], Refusal] = {
    TooLarge: Refusal(413, ErrorCode.TOO_LARGE),
    ValidationError: Refusal(400, ErrorCode.BAD_REQUEST),
    Conflict: Refusal(409, ErrorCode.BAD_REQUEST),
    NotFound: Refusal(404, ErrorCode.BAD_REQUEST),
    Forbidden: Refusal(403, ErrorCode.FORBIDDEN),
    RateLimited: Refusal(429, ErrorCode.RATE_LIMITED),
    Unavailable: Refusal(503, ErrorCode.UNAVAILABLE, "storage is unavailable right now; retry shortly"),
}


def refusal_for(exc: BaseException) -> Refusal | None:
    """The answer for ``exc``, or None if it is not one we raise on purpose (a bug: 500)."""
    for cls in type(exc).__mro__:
        refusal = REFUSALS.get(cls)
        if refusal is not None:
            return refusal
    return None


class ProtocolError(ValidationError):
    """A client frame we cannot accept; becomes a ``bad_request`` error frame."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


def has_control_characters(value: str, allowed: str = "") -> bool:
    """Whether ``value`` holds a control character (C0, DEL, C1) or a lone surrogate, other than ``allowed``.

    Lone surrogates come from JSON escapes like ``"\\ud800"``; they are not
    text and cannot be encoded to store or send.
    """
    return any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value)


def valid_seq(value: object) -> TypeGuard[int]:
    """A seq a client may send: an integer (not a bool) in 0..2^53-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER


# -- client frames -------------------------------------------------------------


@dataclass(frozen=True)
class SendFrame:
    client_id: str
    body: str


@dataclass(frozen=True)
class SyncFrame:
    since: int
    # Also send the messages revised after this rev (an ``updates`` frame).
    rev: int | None = None


@dataclass(frozen=True)
class FetchFrame:
    """Scroll-back: up to ``limit`` messages just before ``before``."""

    before: int
    limit: int
    client_id: str | None = None


@dataclass(frozen=True)
class TypingFrame:
    """The sender is typing: the others in the room are told, nothing is stored."""

    client_id: str | None = None


@dataclass(frozen=True)
class EditFrame:
    """The author replaces the body of their message ``id``."""

    id: str
    body: str
    client_id: str | None = None


@dataclass(frozen=True)
class DeleteFrame:
    """The author deletes their message ``id``."""

    id: str
    client_id: str | None = None


@dataclass(frozen=True)
class ReadFrame:
    """The reader has seen the room's messages up to ``seq``."""

    seq: int
    client_id: str | None = None


ClientFrame = SendFrame | SyncFrame | FetchFrame | TypingFrame | EditFrame | DeleteFrame | ReadFrame


def _valid_client_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_LENGTH and value.isprintable()


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse and validate one client frame, or raise :class:`ProtocolError`.

    The schema is strict: every field has one type and every frame type its
    set of fields, so an object where a string belongs (``{"$ne": ""}``) or
    an extra key (``"$where"``) is refused here, before anything reaches
    storage.
    """
    if isinstance(text, bytes):
        raise ProtocolError("frames must be JSON text, not binary")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays/objects ("[[[[...") overflow the
        # decoder; that is the client's malformed input, not a server fault.
        raise ProtocolError("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("frame must be a JSON object")
    client_id = data.get("client_id")
    if not _valid_client_id(client_id):
        client_id = None
    kind = data.get("type")
    schema = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        # Named only when it is a string, and cut short: it may be any JSON value, of any size.
        said = f"unknown frame type {kind[:32]!r}" if isinstance(kind, str) else "frame needs a string type"
        raise ProtocolError(said, client_id)
    fields, parse = schema
    unknown = set(data) - fields
    if unknown:
        raise ProtocolError(f"unknown field(s) in {kind}: {', '.join(sorted(map(repr, unknown)))[:200]}", client_id)
    return parse(data, client_id)


def _read_body(kind: str, data: dict[str, Any], client_id: str | None) -> str:
    body = data.get("body")
    if not isinstance(body, str):
        raise ProtocolError(f"{kind} needs a string body", client_id)
    # Line breaks and tabs are text; other control characters never come from a keyboard.
    if has_control_characters(body, allowed="\t\n\r"):
        raise ProtocolError("body contains control characters or invalid unicode", client_id)
    return body


def _read_message_id(kind: str, data: dict[str, Any], client_id: str | None) -> str:
    message_id = data.get("id")
    if not (
        isinstance(message_id, str)
        and 0 < len(message_id) <= MAX_ID_LENGTH
        and message_id.isascii()
        and message_id.isalnum()
    ):
        raise ProtocolError(
            f"{kind} needs the id of a message (letters and digits, at most {MAX_ID_LENGTH})", client_id
        )
    return message_id


def _parse_send(data: dict[str, Any], client_id: str | None) -> SendFrame:
    if client_id is None:
        raise ProtocolError(f"send needs a client_id of 1-{MAX_CLIENT_ID_LENGTH} printable characters")
    return SendFrame(client_id=client_id, body=_read_body("send", data, client_id))


def _parse_edit(data: dict[str, Any], client_id: str | None) -> EditFrame:
    return EditFrame(
        id=_read_message_id("edit", data, client_id), body=_read_body("edit", data, client_id), client_id=client_id
    )


def _parse_delete(data: dict[str, Any], client_id: str | None) -> DeleteFrame:
    return DeleteFrame(id=_read_message_id("delete", data, client_id), client_id=client_id)


def _parse_sync(data: dict[str, Any], client_id: str | None) -> SyncFrame:
    since = data.get("since")
    if not valid_seq(since):
        raise ProtocolError(f"sync needs since: an integer from 0 to {MAX_SAFE_INTEGER}", client_id)
    rev = data.get("rev")
    if rev is not None and not valid_seq(rev):
        raise ProtocolError(f"sync rev must be an integer from 0 to {MAX_SAFE_INTEGER}", client_id)
    return SyncFrame(since=since, rev=rev)


def _parse_fetch(data: dict[str, Any], client_id: str | None) -> FetchFrame:
    before = data.get("before")
    if not valid_seq(before) or before < 1:
        raise ProtocolError(f"fetch needs before: an integer from 1 to {MAX_SAFE_INTEGER}", client_id)
    limit = data.get("limit", FETCH_DEFAULT_LIMIT)
    if not (isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= FETCH_MAX_LIMIT):
        raise ProtocolError(f"fetch limit must be an integer from 1 to {FETCH_MAX_LIMIT}", client_id)
    return FetchFrame(before=before, limit=limit, client_id=client_id)


def _parse_read(data: dict[str, Any], client_id: str | None) -> ReadFrame:
    seq = data.get("seq")
    if not valid_seq(seq):
        raise ProtocolError(f"read needs seq: an integer from 0 to {MAX_SAFE_INTEGER}", client_id)
    return ReadFrame(seq=seq, client_id=client_id)


def _parse_typing(data: dict[str, Any], client_id: str | None) -> TypingFrame:
    return TypingFrame(client_id=client_id)


# Each frame type: the fields it may carry, and its parser.
_SCHEMAS: dict[str, tuple[frozenset[str], Callable[[dict[str, Any], str | None], ClientFrame]]] = {
    "send": (frozenset({"type", "client_id", "body"}), _parse_send),
    # client_id is optional on sync: error frames echo it when it is valid.
    "sync": (frozenset({"type", "since", "rev", "client_id"}), _parse_sync),
    "fetch": (frozenset({"type", "before", "limit", "client_id"}), _parse_fetch),
    "typing": (frozenset({"type", "client_id"}), _parse_typing),
    "edit": (frozenset({"type", "id", "body", "client_id"}), _parse_edit),
    "delete": (frozenset({"type", "id", "client_id"}), _parse_delete),
    "read": (frozenset({"type", "seq", "client_id"}), _parse_read),
}


# -- server frames -------------------------------------------------------------


class Outbound:
    """One frame for many sockets: its text, and the bytes a transport makes of it once.

    The fan-out hands the same Outbound to every socket of a room in this
    process; the first transport to write it stores its wire encoding in
    ``encoded`` (for WebSockets: the whole frame, header included; server
    frames are unmasked, so the bytes are the same for every socket) and the
    others write those bytes as they are.
    """

    __slots__ = ("author", "encoded", "facts", "text")

    def __init__(self, text: str, author: str | None = None) -> None:
        self.text = text
        self.encoded: bytes | None = None
        # The user a notice is about (typing), who is not sent it.
        self.author = author
        # A message frame's author and mentions, read once for every stream (see message_facts).
        self.facts: MessageFacts | None = None

    def __repr__(self) -> str:
        return f"Outbound({self.text[:60]!r})"


class MessageFacts(NamedTuple):
    """What the event streams need to know of a stored message."""

    author: str
    # The users its rendered @mentions name.
    mentioned: frozenset[str]


# A mention span as the renderer makes it (chat.services.conversation.formatting.mention_span).
# Text can hold `data-user-id="..."` (the sanitiser leaves quotes in text alone)
# but never an element: every "<" of text is escaped, and the sanitiser lets no
# other element carry the attribute.
_MENTION_ID = re.compile(r'<span class="mention" data-user-id="([^"]*)">')


def message_facts(frame: Outbound) -> MessageFacts:
    """The author of the message a ``message`` frame carries and whom it mentions (read once per frame).

    Read from the message's fields, never by searching the frame's text, which
    holds whatever the sender typed. The mentions are the spans the server's
    renderer made for the users it resolved: what the stored mention records
    of the message were made from.
    """
    if frame.facts is None:
        message = json.loads(frame.text)["message"]
        mentioned = frozenset(html.unescape(user_id) for user_id in _MENTION_ID.findall(message.get("html") or ""))
        frame.facts = MessageFacts(str(message["user_id"]), mentioned)
    return frame.facts


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def hello_frame(room: Room, user: User, instance: str, last_seq: int) -> str:
    return _dumps(
        {
            "type": "hello",
            "room": {"id": room.id, "name": room.name},
            "user": user.public(),
            "instance": instance,
            "last_seq": last_seq,
        }
    )


def message_wire(message: Message) -> str:
    """A message as it appears inside frames (the ``MSG`` of docs/protocol.md), as JSON text."""
    return _dumps(message.to_wire())


_MESSAGE_FRAME_PREFIX = '{"type":"message","message":'


def wire_of_message_frame(frame: str) -> str:
    """The ``MSG`` inside a ``message`` frame's text, without re-serializing when it can be cut out."""
    if frame.startswith(_MESSAGE_FRAME_PREFIX) and frame.endswith("}"):
        return frame[len(_MESSAGE_FRAME_PREFIX) : -1]
    # Written by another version of this code (a rolling upgrade): parse it.
    return _dumps(json.loads(frame)["message"])


def history_frame(messages: Iterable[Message], has_more: bool) -> str:
    return history_frame_of([message_wire(m) for m in messages], has_more)


def history_frame_of(wires: Sequence[str], has_more: bool) -> str:
    """One ``history`` frame of messages already in wire form (see :func:`message_wire`)."""
    return '{"type":"history","messages":[' + ",".join(wires) + '],"has_more":' + json.dumps(has_more) + "}"


def history_frames(messages: Sequence[Message], has_more: bool, max_bytes: int) -> list[str]:
    """``history`` frames for ``messages``, none over ``max_bytes`` (unless one message alone is).

    Every frame but the last says ``has_more: true``; the last says ``has_more``.
    """
    return history_frames_of([message_wire(m) for m in messages], has_more, max_bytes)


def history_frames_of(wires: Sequence[str], has_more: bool, max_bytes: int) -> list[str]:
    """:func:`history_frames` for messages already in wire form: each is serialized once, frames join pieces."""
    frames: list[list[str]] = [[]]
    size = 0
    for piece in wires:
        length = len(piece.encode())
        if frames[-1] and size + length + 64 > max_bytes:
            frames.append([])
            size = 0
        frames[-1].append(piece)
        size += length + 1
    last = len(frames) - 1
    return [history_frame_of(group, i < last or has_more) for i, group in enumerate(frames)]


def older_history_frame(messages: Sequence[Message], has_more: bool, before: int) -> str:
    """The answer to ``fetch``: the messages just before ``before``, ascending, and whether older ones exist."""
    wires = ",".join(message_wire(m) for m in messages)
    return (
        '{"type":"history","messages":['
        + wires
        + '],"has_more":'
        + json.dumps(has_more)
        + ',"before":'
        + str(before)
        + "}"
    )


def history_reset_frame() -> str:
    """The answer to a resume from too far back: reload instead (docs/protocol.md)."""
    return _dumps({"type": "history", "messages": [], "has_more": False, "reset": True})


def message_frame(message: Message) -> str:
    return _MESSAGE_FRAME_PREFIX + message_wire(message) + "}"


_UPDATED_FRAME_PREFIX = '{"type":"message_updated","message":'


def message_updated_frame(message: Message) -> str:
    """Tells a room that a message was edited or deleted: MSG as it is now (its ``rev`` says how new)."""
    return _UPDATED_FRAME_PREFIX + message_wire(message) + "}"


def message_frame_of_update(frame: str) -> str:
    """The ``message`` frame of the MSG a ``message_updated`` frame carries (what a feed remembers)."""
    if frame.startswith(_UPDATED_FRAME_PREFIX) and frame.endswith("}"):
        return _MESSAGE_FRAME_PREFIX + frame[len(_UPDATED_FRAME_PREFIX) :]
    return _MESSAGE_FRAME_PREFIX + _dumps(json.loads(frame)["message"]) + "}"


def updates_frame(messages: Iterable[Message], last_rev: int) -> str:
    """The answer to a resume with ``rev``: the messages revised since, and the rev to resume from next."""
    return _dumps({"type": "updates", "messages": [m.to_wire() for m in messages], "last_rev": last_rev})


def ack_frame(message: Message) -> str:
    return _dumps({"type": "ack", "client_id": message.client_id, "message": message.to_wire()})


def error_frame(code: str, message: str, client_id: str | None = None, retry_after: float | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    if retry_after is not None:
        # Seconds, rounded up so that a client waiting exactly this long is
        # not refused again for a rounding error.
        frame["retry_after"] = math.ceil(retry_after * 100) / 100
    return _dumps(frame)


def error_frame_for(exc: ChatError, refusal: Refusal, client_id: str | None) -> str:
    """The ``error`` frame that answers ``exc`` (see :data:`REFUSALS`)."""
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return error_frame(refusal.code, refusal.public_message or str(exc), client_id, retry_after)


def typing_frame(user: User) -> str:
    """Tells the others in a room that ``user`` is typing (never stored, never to the user)."""
    return _dumps({"type": "typing", "user": user.public()})


def membership_frame(change: str, user_id: str, username: str) -> str:
    """Someone ``joined``, ``left``, or was ``removed`` or ``banned`` from the room."""
    return _dumps({"type": "membership", "change": change, "user": {"id": user_id, "username": username}})


def room_updated_frame(room: Room) -> str:
    """The room was renamed or given a topic."""
    return _dumps({"type": "room_updated", "room": {"id": room.id, "name": room.name, "topic": room.topic}})


def presence_frame(users: Iterable[OnlineUser]) -> str:
    return _dumps({"type": "presence", "users": [user.to_wire() for user in users]})


# -- between processes ---------------------------------------------------------

# A control event, never sent to clients: "re-read this room's presence".
PRESENCE_CHANGED = "presence_changed"
# A control event: "close this user's sockets in this room" (they left, or were removed or banned).
MEMBER_REMOVED = "member_removed"


def control_event(kind: str) -> str:
    return _dumps({"type": kind})


def member_removed_event(user_id: str) -> str:
    return _dumps({"type": MEMBER_REMOVED, "user_id": user_id})


def removed_user(event: str) -> str:
    """The user a ``member_removed`` event names."""
    return str(json.loads(event)["user_id"])


# -- events between processes on the process-wide and per-person channels -----
# (chat.broker.channels names the channels; the event streams' frames are the
# user-channel events as they are).

SESSIONS_ENDED = "sessions_ended"
ROOM_CHANGED = "room_changed"


def sessions_ended_event(keys: Sequence[str]) -> str:
    """On ``chat:control``: these stored sessions ended; every process closes their sockets."""
    return _dumps({"type": SESSIONS_ENDED, "sessions": list(keys)})


def ended_sessions(event: str) -> set[str]:
    """The session keys a ``sessions_ended`` event names; ValueError if it is not one."""
    data = json.loads(event)
    keys = data.get("sessions") if isinstance(data, dict) and data.get("type") == SESSIONS_ENDED else None
    if not isinstance(keys, list):
        raise ValueError("not a sessions_ended event")
    return {key for key in keys if isinstance(key, str)}


def room_changed_event(room_id: str) -> str:
    """On ``chat:rooms``: the stored room changed; every process forgets its copy."""
    return _dumps({"type": ROOM_CHANGED, "room_id": room_id})


def changed_room(event: str) -> str:
    """The room a ``room_changed`` event names; ValueError if it is not one."""
    data = json.loads(event)
    room_id = data.get("room_id") if isinstance(data, dict) else None
    if not isinstance(room_id, str):
        raise ValueError("not a room_changed event")
    return room_id


def read_event(room_id: str, read_seq: int, mentions: int) -> str:
    """On a person's channel, and to their event streams as it is: their marker in a room moved."""
    return _dumps({"type": "read", "room_id": room_id, "read_seq": read_seq, "mentions": mentions})


def rooms_changed_event() -> str:
    """On a person's channel: the rooms they belong to changed (their streams send new ``badges``)."""
    return _dumps({"type": "rooms_changed"})


class Routing(NamedTuple):
    kind: str
    seq: int | None = None
    # The user a notice is about (typing): that user's sockets skip it.
    author: str | None = None
    # A revised message's rev (message_updated; its seq is in ``seq``).
    rev: int | None = None


def frame_routing(frame: str) -> Routing:
    """The ``type`` of a frame from the broker, its ``seq`` and its author, where they apply.

    The broker carries finished frames; each process parses each one once (not
    once per socket) to keep delivery ordered and duplicate-free.
    """
    data = json.loads(frame)
    kind = data["type"]
    if kind == "message":
        return Routing(kind, int(data["message"]["seq"]))
    if kind == "typing":
        return Routing(kind, author=str(data["user"]["id"]))
    if kind == "message_updated":
        return Routing(kind, int(data["message"]["seq"]), rev=int(data["message"]["rev"]))
    return Routing(kind)
