"""The domain records shared by services, storage and the wire protocol.

They are plain frozen dataclasses so that every storage backend returns the
same shapes and nothing above storage depends on a database driver.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


def utcnow() -> datetime.datetime:
    # Millisecond precision: MongoDB stores BSON dates in milliseconds, so
    # anything finer would make the two backends disagree about the same record.
    now = datetime.datetime.now(datetime.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_id() -> str:
    """A random, URL-safe identifier (96 bits, 24 hex characters)."""
    return secrets.token_hex(12)


def isoformat(moment: datetime.datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a ``Z`` suffix."""
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password_hash: bytes
    created_at: datetime.datetime
    # A disabled account cannot sign in, and its sessions are ended.
    disabled: bool = False
    # A site administrator moderates every room and disables accounts.
    admin: bool = False

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username}


class RoomKind(StrEnum):
    """Who may see a room."""

    PUBLIC = "public"  # listed; any signed-in user may read and join it
    PRIVATE = "private"  # members only; to anyone else it does not exist
    DIRECT = "direct"  # a private conversation of two people (a DM)


class Role(StrEnum):
    """A member's standing in a room."""

    OWNER = "owner"  # the creator
    MODERATOR = "moderator"  # named by the owner
    MEMBER = "member"


@dataclass(frozen=True)
class Room:
    id: str
    name: str
    creator_id: str
    creator_username: str
    created_at: datetime.datetime
    # The highest seq stored in this room (seqs run 1, 2, 3, ... without holes).
    last_seq: int = 0
    kind: RoomKind = RoomKind.PUBLIC
    topic: str = ""
    # When its latest message was stored (None: no message yet).
    last_message_at: datetime.datetime | None = None
    # Set by a site administrator (python -m chat.admin room archive): the
    # room stays readable, and nothing new is stored in it (no message, edit
    # or deletion) until it is unarchived.
    archived_at: datetime.datetime | None = None

    @property
    def listed(self) -> bool:
        return self.kind is RoomKind.PUBLIC

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


@dataclass(frozen=True)
class Membership:
    """One person in one room."""

    room_id: str
    user_id: str
    username: str
    role: Role
    joined_at: datetime.datetime
    # The last seq this person has read here (moved by the client, never backwards).
    read_seq: int = 0


class ModerationAction(StrEnum):
    DELETE_MESSAGE = "delete_message"
    REMOVE_MEMBER = "remove_member"
    BAN = "ban"
    UNBAN = "unban"
    SET_ROLE = "set_role"
    SET_TOPIC = "set_topic"
    RENAME = "rename"


@dataclass(frozen=True)
class ModerationEntry:
    """One action by a room's owner or a moderator: who, what, to whom or what, when."""

    room_id: str
    actor_id: str
    actor_username: str
    action: ModerationAction
    target: str  # a user id, a message id, or empty
    detail: str  # the new name, topic or role; empty otherwise
    at: datetime.datetime


@dataclass(frozen=True)
class Ban:
    """Someone kept out of a room, by whom and since when."""

    room_id: str
    user_id: str
    by_user_id: str
    at: datetime.datetime


@dataclass(frozen=True)
class Message:
    id: str
    room_id: str
    seq: int
    user_id: str
    username: str
    body: str
    created_at: datetime.datetime
    client_id: str
    # Set by the author's last edit; a deleted message keeps its place, with
    # its body gone (empty) and deleted_at set.
    edited_at: datetime.datetime | None = None
    deleted_at: datetime.datetime | None = None
    # The room's revision counter when this message was last edited or
    # deleted (0: never). Readers keep the copy with the highest rev, and a
    # client resuming after rev R is sent the messages revised after it.
    rev: int = 0
    # The body rendered (chat.services.conversation.formatting) when stored or edited;
    # empty for messages stored before rendering existed: show the body as text.
    html: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "seq": self.seq,
            "user_id": self.user_id,
            "username": self.username,
            "body": self.body,
            "created_at": isoformat(self.created_at),
            "client_id": self.client_id,
            "rev": self.rev,
            "edited_at": isoformat(self.edited_at) if self.edited_at else None,
            "deleted_at": isoformat(self.deleted_at) if self.deleted_at else None,
            "html": self.html,
        }


@dataclass(frozen=True)
class Revision:
    """An author's change to a stored message: a new body, or (``body`` None) its deletion."""

    room_id: str
    message_id: str
    body: str | None
    at: datetime.datetime
    html: str = ""

    @property
    def deletes(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class RoomCounters:
    """A room's counters: the highest seq stored and the highest rev handed out."""

    seq: int = 0
    rev: int = 0


@dataclass(frozen=True)
class NewMessage:
    """What a sender supplies; storage assigns ``id``, ``seq`` and ``created_at``."""

    room_id: str
    user_id: str
    username: str
    body: str
    client_id: str
    html: str = ""
    # The users its @mentions name (for their mention counts).
    mentions: tuple[str, ...] = ()

    def stored_as(self, id: str, seq: int, created_at: datetime.datetime) -> Message:
        """The message this becomes once storage has given it an id, a seq and a time."""
        return Message(
            id=id,
            room_id=self.room_id,
            seq=seq,
            user_id=self.user_id,
            username=self.username,
            body=self.body,
            created_at=created_at,
            client_id=self.client_id,
            html=self.html,
        )


@dataclass(frozen=True, order=True)
class OnlineUser:
    """Someone with at least one open socket in a room (ordered by name for display)."""

    username: str
    id: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "username": self.username}


@dataclass(frozen=True)
class Session:
    id: str
    user_id: str
    created_at: datetime.datetime
    # The absolute end: no activity keeps a session past it.
    expires_at: datetime.datetime
    # The idle end: pushed forward by activity (see Accounts), never past expires_at.
    idle_expires_at: datetime.datetime
