"""Every frame the server sends on a room socket, one builder each (``docs/protocol.md`` is the contract).

Frames are JSON text. Those many sockets get (a room's messages, typing,
presence) travel as one :class:`Outbound`, built into WebSocket bytes once.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ..errors import ChatError, RateLimited
from ..models import Message, OnlineUser, Room, User
from .refusals import Refusal, retry_after_seconds

# A resume is sent at most this many revised messages; past it, the client reloads.
UPDATES_MAX = 500
# A history frame never carries more than this many messages.
HISTORY_PAGE_SIZE = 500

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
        frame["retry_after"] = retry_after_seconds(retry_after)
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


# -- the event stream (/events/ws) ----------------------------------------------


def badges_frame(rooms: Sequence[dict[str, Any]]) -> str:
    """A person's rooms with their counts (each a ``Badge.to_wire()``)."""
    return _dumps({"type": "badges", "rooms": list(rooms)})


def activity_frame(room_id: str, last_seq: int, *, mine: bool, mention: bool) -> str:
    """A message was stored in one of the person's rooms."""
    return _dumps({"type": "activity", "room_id": room_id, "last_seq": last_seq, "mine": mine, "mention": mention})
