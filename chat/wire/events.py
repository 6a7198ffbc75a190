"""What processes tell each other on the broker besides a room's frames, one builder and one reader each.

On a room's channel: control events the fan-out hands to a handler instead
of to the sockets (presence changed, a member removed). On the process-wide
and per-person channels (named in :mod:`chat.broker.channels`): ended
sessions, changed rooms, a person's read markers and rooms (the event
streams pass those on as they are). :func:`frame_routing` is how the fan-out
reads any of them, once per process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


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
