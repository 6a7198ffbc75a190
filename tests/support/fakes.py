"""Test doubles shared by the unit and integration tiers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chat.services.realtime.fanout import Fanout
from chat.wire.server import Outbound


class RecordingListener:
    """Stands in for a socket in a room's feed: records every frame, in order."""

    def __init__(self) -> None:
        self.received: list[tuple[int | None, str]] = []

    def deliver(self, seq: int | None, frame: Outbound) -> None:
        self.received.append((seq, frame.text))

    @property
    def seqs(self) -> list[int | None]:
        """The seq of every frame, None for frames without one (presence, ...)."""
        return [seq for seq, _ in self.received]

    @property
    def message_seqs(self) -> list[int]:
        return [seq for seq, _ in self.received if seq is not None]

    @property
    def message_frames(self) -> list[str]:
        return [frame for seq, frame in self.received if seq is not None]

    @property
    def presence_lists(self) -> list[list[str]]:
        """The usernames of every presence frame received, in order."""
        lists = []
        for seq, frame in self.received:
            data = json.loads(frame)
            if seq is None and data["type"] == "presence":
                lists.append([user["username"] for user in data["users"]])
        return lists


@dataclass
class FakeTransport:
    """Stands in for a WebSocket under a RoomConnection: records frames (parsed) and the close."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_with: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def send_shared(self, frame: Outbound) -> None:
        self.sent.append(json.loads(frame.text))

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.sent if frame["type"] == kind]

    @property
    def types(self) -> list[str]:
        return [frame["type"] for frame in self.sent]


def listeners_in(fanout: Fanout, room_id: str) -> int:
    """How many local listeners the room's feed delivers to (0 without a feed): the fan-out keeps it to itself."""
    feed = fanout._feeds.get(room_id)
    return len(feed.listeners) if feed else 0
