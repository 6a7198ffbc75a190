"""Every frame a client may send on a room socket, each declared once.

A :class:`FrameType` says all there is to know about one kind of frame: its
``type`` on the wire and the fields it may carry, how it is read (every field
has one type, and anything else is refused here, at the edge), the limits
counted before it is handled, the method of the room connection that handles
it (``on_<type>``), and whether what it causes reaches the room's sockets on
other processes. The connection dispatches through :data:`FRAME_TYPES`
(chat.services.realtime.connection); ``docs/protocol.md`` documents each, and
a test keeps the two in step.

Adding a frame type: its dataclass, its reader and its :func:`declare` here;
its ``on_<type>`` handler on the connection; ``docs/protocol.md``; the page's
script; tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .actions import Action
from .refusals import ProtocolError
from .text import MAX_SAFE_INTEGER, has_control_characters, valid_seq

MAX_CLIENT_ID_LENGTH = 64
# Message ids are 24 hex characters; anything longer is not one.
MAX_ID_LENGTH = 64
# Scroll-back: messages per fetch when the client does not say, and at most.
FETCH_DEFAULT_LIMIT = 50
FETCH_MAX_LIMIT = 100


class Per(Enum):
    """Whose count a frame's limit is."""

    USER = "user"
    SOCKET = "socket"


@dataclass(frozen=True)
class Limit:
    action: Action
    per: Per = Per.USER


@dataclass(frozen=True)
class FrameType:
    """One kind of client frame (see the module's docs)."""

    # Its ``type`` on the wire.
    name: str
    # The dataclass a frame of this type is read into.
    frame: type
    # The fields it may carry besides ``type`` and ``client_id``.
    fields: frozenset[str]
    read: Callable[[FrameReader], ClientFrame]
    # What it is for, in a line (docs/protocol.md says it at length).
    about: str
    # Counted before the handler runs; a refusal is a ``rate_limited`` error.
    limits: tuple[Limit, ...] = ()
    # Its refusals carry its client_id (the client is waiting for an answer to it).
    answers_with_client_id: bool = True
    # Over its limits it is dropped without an answer: it is a best-effort
    # notice, and an error frame would read to the person as a failed message.
    dropped_over_limits: bool = False
    # What it causes reaches the room's sockets on every process (through the broker).
    crosses_processes: bool = False

    @property
    def handler(self) -> str:
        """The room connection's method that handles it."""
        return f"on_{self.name}"


FRAME_TYPES: dict[str, FrameType] = {}
_BY_CLASS: dict[type, FrameType] = {}


def declare(frame_type: FrameType) -> FrameType:
    FRAME_TYPES[frame_type.name] = frame_type
    _BY_CLASS[frame_type.frame] = frame_type
    return frame_type


def frame_type_of(frame: ClientFrame) -> FrameType:
    """The declaration of a frame read by :func:`parse_client_frame`."""
    return _BY_CLASS[type(frame)]


class FrameReader:
    """One frame's JSON object, read field by field with the checks every frame shares."""

    def __init__(self, kind: str, data: dict[str, Any], client_id: str | None) -> None:
        self.kind = kind
        self.data = data
        self.client_id = client_id

    def refuse(self, why: str) -> ProtocolError:
        return ProtocolError(why, self.client_id)

    def required_client_id(self) -> str:
        if self.client_id is None:
            raise ProtocolError(f"{self.kind} needs a client_id of 1-{MAX_CLIENT_ID_LENGTH} printable characters")
        return self.client_id

    def body(self) -> str:
        body = self.data.get("body")
        if not isinstance(body, str):
            raise self.refuse(f"{self.kind} needs a string body")
        # Line breaks and tabs are text; other control characters never come from a keyboard.
        if has_control_characters(body, allowed="\t\n\r"):
            raise self.refuse("body contains control characters or invalid unicode")
        return body

    def message_id(self) -> str:
        message_id = self.data.get("id")
        if not (
            isinstance(message_id, str)
            and 0 < len(message_id) <= MAX_ID_LENGTH
            and message_id.isascii()
            and message_id.isalnum()
        ):
            raise self.refuse(f"{self.kind} needs the id of a message (letters and digits, at most {MAX_ID_LENGTH})")
        return message_id

    def seq(self, name: str, minimum: int = 0, *, needs: bool = True) -> int | None:
        """An integer field in minimum..2^53-1; None if absent and not ``needs``."""
        value = self.data.get(name)
        if value is None and not needs:
            return None
        if not valid_seq(value) or value < minimum:
            if needs:
                raise self.refuse(f"{self.kind} needs {name}: an integer from {minimum} to {MAX_SAFE_INTEGER}")
            raise self.refuse(f"{self.kind} {name} must be an integer from {minimum} to {MAX_SAFE_INTEGER}")
        return value


# -- the frames --------------------------------------------------------------------


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


def _read_fetch(r: FrameReader) -> FetchFrame:
    before = r.seq("before", minimum=1)
    assert before is not None
    limit = r.data.get("limit", FETCH_DEFAULT_LIMIT)
    if not (isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= FETCH_MAX_LIMIT):
        raise r.refuse(f"fetch limit must be an integer from 1 to {FETCH_MAX_LIMIT}")
    return FetchFrame(before=before, limit=limit, client_id=r.client_id)


def _read_sync(r: FrameReader) -> SyncFrame:
    since = r.seq("since")
    assert since is not None
    return SyncFrame(since=since, rev=r.seq("rev", needs=False))


def _read_read(r: FrameReader) -> ReadFrame:
    seq = r.seq("seq")
    assert seq is not None
    return ReadFrame(seq=seq, client_id=r.client_id)


SEND = declare(
    FrameType(
        "send",
        SendFrame,
        frozenset({"body"}),
        lambda r: SendFrame(client_id=r.required_client_id(), body=r.body()),
        "store a message (acked, then delivered to the room); counted as a send in the send pipeline",
        crosses_processes=True,
    )
)
SYNC = declare(
    FrameType(
        "sync",
        SyncFrame,
        frozenset({"since", "rev"}),
        _read_sync,
        "history after a seq (and the revisions after a rev)",
        limits=(Limit(Action.SYNC_PER_SOCKET, Per.SOCKET), Limit(Action.SYNC_PER_USER)),
        # client_id is optional on sync: only a frame it cannot read echoes it.
        answers_with_client_id=False,
    )
)
FETCH = declare(
    FrameType(
        "fetch",
        FetchFrame,
        frozenset({"before", "limit"}),
        _read_fetch,
        "scroll-back: the messages just before a seq",
        limits=(Limit(Action.FETCH),),
    )
)
TYPING = declare(
    FrameType(
        "typing",
        TypingFrame,
        frozenset(),
        lambda r: TypingFrame(client_id=r.client_id),
        "tell the others in the room that the sender is typing (stored nowhere); over its limit, dropped unanswered",
        limits=(Limit(Action.TYPING),),
        dropped_over_limits=True,
        crosses_processes=True,
    )
)
EDIT = declare(
    FrameType(
        "edit",
        EditFrame,
        frozenset({"id", "body"}),
        lambda r: EditFrame(id=r.message_id(), body=r.body(), client_id=r.client_id),
        "replace an own message's body (message_updated to the room); counted as a send",
        crosses_processes=True,
    )
)
DELETE = declare(
    FrameType(
        "delete",
        DeleteFrame,
        frozenset({"id"}),
        lambda r: DeleteFrame(id=r.message_id(), client_id=r.client_id),
        "delete an own message, or any as a moderator (message_updated to the room); counted as a send",
        crosses_processes=True,
    )
)
READ = declare(
    FrameType(
        "read",
        ReadFrame,
        frozenset({"seq"}),
        _read_read,
        "move the reader's marker (their other pages hear of it)",
        answers_with_client_id=False,
        crosses_processes=True,
    )
)


def _valid_client_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_LENGTH and value.isprintable()


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse and validate one client frame, or raise :class:`ProtocolError` (its type: :func:`frame_type_of`).

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
    frame_type = FRAME_TYPES.get(kind) if isinstance(kind, str) else None
    if frame_type is None:
        # Named only when it is a string, and cut short: it may be any JSON value, of any size.
        said = f"unknown frame type {kind[:32]!r}" if isinstance(kind, str) else "frame needs a string type"
        raise ProtocolError(said, client_id)
    unknown = set(data) - frame_type.fields - {"type", "client_id"}
    if unknown:
        raise ProtocolError(f"unknown field(s) in {kind}: {', '.join(sorted(map(repr, unknown)))[:200]}", client_id)
    return frame_type.read(FrameReader(frame_type.name, data, client_id))
