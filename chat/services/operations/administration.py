"""What a site administrator does from the command line (``python -m chat.admin``).

Accounts (create, make administrator, disable, reset a password), sessions
(list, end), rooms (archive, delete, export, import) and counts. Each
operation goes through the same services the server uses, so its effects
reach running processes the same way: ended sessions and removed members
are announced over the broker, changed rooms are forgotten by every process.

The room export format (JSON Lines, UTF-8) is defined here, version 1:

- line 1, the room: ``{"type": "room", "format": "chat.room", "version": 1,
  "id", "name", "kind", "topic", "creator", "created_at", "archived_at",
  "last_seq", "exported_at"}``;
- then one line per message, ascending ``seq``: ``{"type": "message",
  "seq", "id", "user_id", "user", "body", "html", "client_id",
  "created_at", "edited_at", "deleted_at", "rev"}``.

Times are ISO 8601 in UTC with milliseconds (``2026-01-31T12:00:00.000Z``),
or null; a deleted message keeps its place with an empty body. Readers
ignore fields they do not know, so fields may be added without a new
version. Memberships, bans, mentions and the moderation log are not
exported. ``html`` is for other readers: an import renders every body again
(HTML from a file is never trusted, and mentions must name this site's users).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import Conflict, NotFound, ValidationError
from ...events import EventBus, MemberRemoved, RoomsChanged
from ...models import Message, Role, Room, RoomKind, Session, User, isoformat, utcnow
from ...storage import Storage
from .. import audit
from ..conversation.formatting import Renderer
from ..conversation.messages import MAX_BODY_LENGTH
from ..identity.accounts import Accounts
from ..rooms.catalog import MAX_TOPIC_LENGTH, clean_room_name
from ..rooms.membership import Memberships
from ..rooms.moderation import Moderation

EXPORT_FORMAT = "chat.room"
EXPORT_VERSION = 1
# Messages read (export) or stored (import) per storage call.
TRANSFER_PAGE = 500
# The shortest session prefix accepted: fewer characters name too many sessions to be a choice.
MIN_SESSION_PREFIX = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counts:
    users: int
    rooms: int
    messages: int
    live_sessions: int


@dataclass(frozen=True)
class ExportedRoom:
    """The first line of an export: the room the messages belong to."""

    name: str
    kind: RoomKind
    topic: str
    creator: str
    archived_at: datetime.datetime | None


@dataclass(frozen=True)
class ImportTarget:
    """Where an import's messages go, and whether the room was made by this import."""

    room: Room
    created: bool


def _time(value: datetime.datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def room_record(room: Room, exported_at: datetime.datetime) -> dict[str, Any]:
    return {
        "type": "room",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "id": room.id,
        "name": room.name,
        "kind": room.kind.value,
        "topic": room.topic,
        "creator": room.creator_username,
        "created_at": _time(room.created_at),
        "archived_at": _time(room.archived_at),
        "last_seq": room.last_seq,
        "exported_at": _time(exported_at),
    }


def message_record(message: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "seq": message.seq,
        "id": message.id,
        "user_id": message.user_id,
        "user": message.username,
        "body": message.body,
        "html": message.html,
        "client_id": message.client_id,
        "created_at": _time(message.created_at),
        "edited_at": _time(message.edited_at),
        "deleted_at": _time(message.deleted_at),
        "rev": message.rev,
    }


KIND_NAMES = {int: "whole number", str: "string"}


def _field(record: Mapping[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = record.get(name)
    if value is None and optional:
        return None
    # bool is an int to Python, never a seq or a rev.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValidationError(f"field {name!r} is missing or not a {KIND_NAMES.get(kind, kind.__name__)}")
    return value


def _parse_time(record: Mapping[str, Any], name: str, *, optional: bool = False) -> datetime.datetime | None:
    text = _field(record, name, str, optional=optional)
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"field {name!r} is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValidationError(f"field {name!r} has no time zone: {text!r}")
    return moment.astimezone(datetime.UTC)


def parse_room_record(record: Mapping[str, Any]) -> ExportedRoom:
    """The room line of an export; ValidationError saying what is wrong with it."""
    if record.get("type") != "room" or record.get("format") != EXPORT_FORMAT:
        raise ValidationError(f"not a room export: the first line must be a {EXPORT_FORMAT!r} room record")
    if record.get("version") != EXPORT_VERSION:
        raise ValidationError(
            f"export version {record.get('version')!r} is not supported (this reads {EXPORT_VERSION})"
        )
    kind_name = _field(record, "kind", str)
    try:
        kind = RoomKind(kind_name)
    except ValueError:
        raise ValidationError(f"unknown room kind {kind_name!r}") from None
    return ExportedRoom(
        name=_field(record, "name", str),
        kind=kind,
        topic=_field(record, "topic", str, optional=True) or "",
        creator=_field(record, "creator", str),
        archived_at=_parse_time(record, "archived_at", optional=True),
    )


def parse_message_record(record: Mapping[str, Any], room_id: str) -> Message:
    """One message line of an export, as a message of ``room_id``; ValidationError saying what is wrong."""
    if record.get("type") != "message":
        raise ValidationError(f"expected a message record, got type {record.get('type')!r}")
    seq = _field(record, "seq", int)
    if seq < 1:
        raise ValidationError(f"seq must be at least 1, got {seq}")
    created_at = _parse_time(record, "created_at")
    assert created_at is not None  # not optional
    rev = _field(record, "rev", int, optional=True) or 0
    if rev < 0:
        raise ValidationError(f"rev must not be negative, got {rev}")
    deleted_at = _parse_time(record, "deleted_at", optional=True)
    body: str = _field(record, "body", str)
    if deleted_at is not None:
        body = ""  # a deletion keeps nothing of the text, whatever the file says
    elif len(body) > MAX_BODY_LENGTH or not body.strip():
        raise ValidationError(f"a body is 1 to {MAX_BODY_LENGTH} characters, this one {len(body)}")
    return Message(
        id=_field(record, "id", str, optional=True) or "",
        room_id=room_id,
        seq=seq,
        user_id=_field(record, "user_id", str),
        username=_field(record, "user", str),
        body=body,
        created_at=created_at,
        client_id=_field(record, "client_id", str),
        edited_at=_parse_time(record, "edited_at", optional=True),
        deleted_at=deleted_at,
        rev=rev,
    )


class Administration:
    def __init__(
        self,
        storage: Storage,
        accounts: Accounts,
        memberships: Memberships,
        moderation: Moderation,
        events: EventBus,
    ) -> None:
        self._storage = storage
        self._accounts = accounts
        self._memberships = memberships
        self._moderation = moderation
        self._events = events
        self._renderer = Renderer(storage.users.get_by_username)
        # Import: authors by name, looked up once per import run.
        self._authors: dict[str, User | None] = {}

    # -- finding ------------------------------------------------------------

    async def user(self, username: str) -> User:
        user = await self._storage.users.get_by_username(username.strip())
        if user is None:
            raise NotFound(f"no user named {username.strip()!r}")
        return user

    async def room(self, reference: str) -> Room:
        """The room with this id, or else the one with this name (ignoring case)."""
        room = await self._storage.rooms.get(reference)
        if room is not None:
            return room
        named = await self._storage.rooms.named(reference)
        if not named:
            raise NotFound(f"no room with the id or name {reference!r}")
        if len(named) > 1:  # private rooms may share a name, with each other and with a public room
            ids = ", ".join(room.id for room in named)
            raise ValidationError(f"{len(named)} rooms are named {reference!r}: give the id of one ({ids})")
        return named[0]

    # -- accounts -----------------------------------------------------------

    async def create_user(self, username: str, password: str, *, admin: bool = False) -> User:
        try:
            return await self._accounts.create(username, password, admin=admin)
        except Conflict:
            raise Conflict(f"a user named {username.strip()!r} exists already") from None

    async def set_admin(self, username: str, admin: bool) -> User:
        user = await self.user(username)
        await self._accounts.set_admin(user.id, admin)
        return user

    async def set_enabled(self, username: str, enabled: bool) -> tuple[User, int]:
        """Enable or disable the account; with how many sessions disabling ended."""
        user = await self.user(username)
        if enabled:
            await self._accounts.enable(user.id)
            return user, 0
        live = await self._live_sessions(user)
        await self._accounts.disable(user.id)
        return user, live

    async def reset_password(self, username: str, password: str) -> tuple[User, int]:
        user = await self.user(username)
        live = await self._live_sessions(user)
        await self._accounts.reset_password(user.id, password)
        return user, live

    async def _live_sessions(self, user: User) -> int:
        """How many of the user's sessions are live: what ending all of them ends (expired ones are already over)."""
        return len(await self._accounts.sessions_of(user.id))

    # -- sessions -----------------------------------------------------------

    async def sessions(self, username: str | None = None) -> list[tuple[Session, str]]:
        """Live sessions, newest first, each with its user's name."""
        user = await self.user(username) if username is not None else None
        sessions = await self._accounts.sessions_of(user.id if user else None)
        names: dict[str, str] = {user.id: user.username} if user else {}
        for session in sessions:
            if session.user_id not in names:
                owner = await self._storage.users.get(session.user_id)
                names[session.user_id] = owner.username if owner else f"(deleted user {session.user_id})"
        return [(session, names[session.user_id]) for session in sessions]

    async def end_sessions(self, username: str, prefix: str | None = None) -> tuple[User, int]:
        """End the user's session whose id starts with ``prefix``, or all of them (None)."""
        user = await self.user(username)
        if prefix is None:
            live = await self._live_sessions(user)
            await self._accounts.end_sessions(user.id)
            return user, live
        prefix = prefix.strip().lower()
        if len(prefix) < MIN_SESSION_PREFIX:
            raise ValidationError(f"give at least {MIN_SESSION_PREFIX} characters of the session id")
        matching = [s.id for s in await self._accounts.sessions_of(user.id) if s.id.startswith(prefix)]
        if not matching:
            raise NotFound(f"{user.username} has no live session whose id starts with {prefix!r}")
        if len(matching) > 1:
            raise ValidationError(f"{len(matching)} sessions of {user.username} start with {prefix!r}; give more of it")
        return user, await self._accounts.end_sessions(user.id, matching)

    # -- rooms --------------------------------------------------------------

    async def set_archived(self, reference: str, archived: bool) -> Room:
        """Archive (or unarchive) the room.

        Storage refuses what is sent to an archived room, so this holds on
        every process at once; processes are told anyway, to forget their copy.
        """
        room = await self.room(reference)
        if room.archived == archived:
            return room
        changed = await self._storage.rooms.set_archived(room.id, utcnow() if archived else None)
        if changed is None:
            raise NotFound(f"no room with the id or name {reference!r}")
        audit.event("room_archived" if archived else "room_unarchived", room=room.id)
        await self._moderation.announce_changed(room.id)
        return changed

    async def delete_room(self, reference: str) -> tuple[Room, bool]:
        """Delete the room and everything in it; with whether running processes were told at once.

        Its members' sockets in it close on every process, and their room lists change.
        """
        room = await self.room(reference)
        members = await self._memberships.members(room)
        await self._storage.rooms.delete(room.id)
        audit.event("room_deleted", room=room.id, messages=room.last_seq)
        told = await self._moderation.announce_changed(room.id)
        # Deleted all the same if these are not heard: every process re-checks
        # its open sockets' rooms, and pages reload to a 404.
        for member in members:
            told = await self._events.publish(MemberRemoved(room.id, member.user_id)) and told
            told = await self._events.publish(RoomsChanged(member.user_id)) and told
        return room, told

    async def export_pages(self, room: Room) -> AsyncIterator[list[Message]]:
        """The room's messages in ascending seq, a page at a time (never all of them in memory)."""
        cursor = 0
        while True:
            page, more = await self._storage.messages.after(room.id, cursor, TRANSFER_PAGE)
            if page:
                yield page
                cursor = page[-1].seq
            if not more or not page:
                return

    async def import_target(self, exported: ExportedRoom, into: str | None, owner: str | None) -> ImportTarget:
        """The room an import fills: the one of that name and kind if it exists (a re-run), else a new one."""
        if exported.kind is RoomKind.DIRECT:
            raise ValidationError("direct conversations are not imported (they belong to their two people)")
        name = clean_room_name(into if into is not None else exported.name)
        self._authors.clear()
        # A room of another kind is no obstacle: only public rooms' names are unique (RoomRepository.add).
        existing = [room for room in await self._storage.rooms.named(name) if room.kind is exported.kind]
        if len(existing) > 1:
            raise Conflict(f"{len(existing)} {exported.kind.value} rooms are named {name!r}: import --into a new name")
        if existing:
            return ImportTarget(existing[0], created=False)
        owner_name = owner if owner is not None else exported.creator
        creator = await self._storage.users.get_by_username(owner_name)
        if creator is None:
            raise NotFound(f"no user named {owner_name!r} to own the room: create them first, or pass --owner NAME")
        try:
            room = await self._storage.rooms.add(name, creator, exported.kind)
        except Conflict:
            raise Conflict(f"a room named {name!r} was made meanwhile; run the import again") from None
        await self._storage.memberships.add(room.id, creator, Role.OWNER)
        topic = " ".join(exported.topic.split())[:MAX_TOPIC_LENGTH]
        if topic:
            room = await self._storage.rooms.update(room.id, topic=topic) or room
        audit.event("room_imported", room=room.id, owner=creator.id)
        return ImportTarget(room, created=True)

    async def import_page(self, room: Room, messages: Sequence[Message]) -> int:
        """Store one page of an import (ascending seqs); returns how many were new.

        A seq the room holds already is skipped if it is the same message
        (a re-run); a different message there is a Conflict: the room is
        another one that happens to have this name.
        """
        if not messages:
            return 0
        first, last = messages[0].seq, messages[-1].seq
        held, _ = await self._storage.messages.after(room.id, first - 1, last - first + 1)
        held_by_seq = {message.seq: message for message in held}
        authored = []
        for message in messages:
            there = held_by_seq.get(message.seq)
            if there is not None and (there.client_id, there.created_at) != (message.client_id, message.created_at):
                raise Conflict(
                    f"room {room.name!r} holds a different message at seq {message.seq}: import --into a new name"
                )
            html = await self._renderer.render(message.body) if message.body else ""
            authored.append(dataclasses.replace(await self._by_local_author(message), html=html))
        return await self._storage.messages.restore(authored)

    async def _by_local_author(self, message: Message) -> Message:
        """The message with its author's id in this database, found by name (kept as exported if nobody has it)."""
        if message.username not in self._authors:
            self._authors[message.username] = await self._storage.users.get_by_username(message.username)
        author = self._authors[message.username]
        if author is None or author.id == message.user_id:
            return message
        return dataclasses.replace(message, user_id=author.id)

    async def finish_import(self, room: Room, exported: ExportedRoom) -> Room:
        """Archive the imported room if the exported one was."""
        if exported.archived_at is not None and not room.archived:
            room = await self._storage.rooms.set_archived(room.id, exported.archived_at) or room
        await self._moderation.announce_changed(room.id)
        return room

    # -- counts -------------------------------------------------------------

    async def counts(self) -> Counts:
        return Counts(
            users=await self._storage.users.count(),
            rooms=await self._storage.rooms.count(),
            messages=await self._storage.messages.count(),
            live_sessions=await self._storage.sessions.count_live(),
        )
