"""The WebSocket wire protocol: one parser per client frame, one builder per server frame.

``docs/protocol.md`` is the human-readable contract; this module is the
executable one. Frames are JSON text. Client frames are validated here, at the
edge, so the services below only ever see well-typed values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Iterable, Union

from .broker.presence import OnlineUser
from .models import Message, Room, User


class Close(IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1; 1013 from the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect (elsewhere) and resume
    SESSION_ENDED = 1008  # policy violation: the session behind the socket ended; sign in again
    TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # storage unavailable, or the client read too slowly: back off, resume


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame (docs/protocol.md lists when each is sent)."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    FORBIDDEN = "forbidden"


BAD_REQUEST = ErrorCode.BAD_REQUEST
TOO_LARGE = ErrorCode.TOO_LARGE
RATE_LIMITED = ErrorCode.RATE_LIMITED
UNAVAILABLE = ErrorCode.UNAVAILABLE
FORBIDDEN = ErrorCode.FORBIDDEN

MAX_CLIENT_ID_LENGTH = 64
# A history frame never carries more than this many messages.
HISTORY_PAGE_SIZE = 500


class ProtocolError(Exception):
    """A client frame we cannot accept; becomes an ``error`` frame."""

    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


@dataclass(frozen=True)
class SendFrame:
    client_id: str
    body: str


@dataclass(frozen=True)
class SyncFrame:
    since: int


ClientFrame = Union[SendFrame, SyncFrame]


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _valid_client_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_CLIENT_ID_LENGTH
        and value.isprintable()
    )


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse and validate one client frame, or raise :class:`ProtocolError`."""
    if isinstance(text, bytes):
        raise ProtocolError(BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays/objects ("[[[[...") overflow the
        # decoder; that is the client's malformed input, not a server fault.
        raise ProtocolError(BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_REQUEST, "frame must be a JSON object")
    client_id = data.get("client_id") if _valid_client_id(data.get("client_id")) else None
    kind = data.get("type")
    if kind == "send":
        if client_id is None:
            raise ProtocolError(BAD_REQUEST, f"send needs a client_id of 1-{MAX_CLIENT_ID_LENGTH} printable characters")
        body = data.get("body")
        if not isinstance(body, str):
            raise ProtocolError(BAD_REQUEST, "send needs a string body", client_id)
        return SendFrame(client_id=client_id, body=body)
    if kind == "sync":
        since = data.get("since")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise ProtocolError(BAD_REQUEST, "sync needs since: a non-negative integer", client_id)
        return SyncFrame(since=since)
    raise ProtocolError(BAD_REQUEST, f"unknown frame type {kind!r}", client_id)


def hello_frame(room: Room, user: User, instance: str, last_seq: int) -> str:
    return _dumps({
        "type": "hello",
        "room": {"id": room.id, "name": room.name},
        "user": user.public(),
        "instance": instance,
        "last_seq": last_seq,
    })


def history_frame(messages: Iterable[Message], has_more: bool) -> str:
    return _dumps({"type": "history", "messages": [m.to_wire() for m in messages], "has_more": has_more})


def message_frame(message: Message) -> str:
    return _dumps({"type": "message", "message": message.to_wire()})


def ack_frame(message: Message) -> str:
    return _dumps({"type": "ack", "client_id": message.client_id, "message": message.to_wire()})


def error_frame(code: str, message: str, client_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    return _dumps(frame)


def presence_frame(users: Iterable[OnlineUser]) -> str:
    return _dumps({"type": "presence", "users": [user.to_wire() for user in users]})


# Between processes only, never sent to clients: "re-read this room's presence".
PRESENCE_CHANGED = "presence_changed"


def presence_changed_event() -> str:
    return _dumps({"type": PRESENCE_CHANGED})


def frame_routing(frame: str) -> tuple[str, int | None]:
    """The ``type`` of a frame from the broker and its ``seq`` (None if it has none).

    The broker carries finished frames; each process parses each one once (not
    once per socket) to keep delivery ordered and duplicate-free.
    """
    data = json.loads(frame)
    kind = data["type"]
    if kind == "message":
        return kind, int(data["message"]["seq"])
    return kind, None
