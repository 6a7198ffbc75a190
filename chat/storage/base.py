"""The storage contract: small abstract repositories and the bundle that owns them.

Every backend implements these with the same observable behaviour, and
``tests/integration/test_storage_contract.py`` runs one suite against each.
Backends raise :class:`chat.errors.Unavailable` when their server cannot be
reached and :class:`chat.errors.Conflict` for unique-key violations; they never
leak driver exceptions for those cases.
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ..models import (
    Ban,
    Membership,
    Message,
    ModerationEntry,
    NewMessage,
    Revision,
    Role,
    Room,
    RoomCounters,
    RoomKind,
    Session,
    User,
    new_id,
    utcnow,
)


@dataclass(frozen=True)
class Backend:
    """A storage backend as configuration sees it: the URLs it takes, checked without connecting, and what they open.

    Each backend package says this of itself in its ``url`` module; the
    package's storage is imported only when a URL of it is opened.
    """

    name: str
    schemes: frozenset[str]
    # How its URLs look, for the message that refuses one.
    forms: str
    # Raises ValueError saying what is wrong with a URL of one of its schemes; never connects.
    check: Callable[[str], None]
    # Builds (does not connect) the storage a URL names.
    open: Callable[[str], Storage]
    # (host, port or None) where its server answers, for the start-up knock; none for a file.
    addresses: Callable[[str], list[tuple[str, int | None]]]
    # Whether several processes can share one database (a process group needs it).
    shared: bool


# What a room holds besides its own record, deleted with it (tables or collections).
ROOM_CONTENTS = ("messages", "memberships", "bans", "mentions", "moderation")


def new_room(name: str, creator: User, kind: RoomKind) -> Room:
    """The room :meth:`RoomRepository.add` stores: a fresh id, created now."""
    return Room(
        id=new_id(),
        name=name,
        creator_id=creator.id,
        creator_username=creator.username,
        created_at=utcnow(),
        kind=kind,
    )


def new_session(
    session_id: str, user_id: str, expires_at: datetime.datetime, idle_expires_at: datetime.datetime | None
) -> Session:
    """The session :meth:`SessionRepository.add` stores: created now, never idling past its absolute end."""
    return Session(
        id=session_id,
        user_id=user_id,
        created_at=utcnow(),
        expires_at=expires_at,
        idle_expires_at=min(idle_expires_at or expires_at, expires_at),
    )


def room_of(messages: Sequence[Message]) -> str:
    """The one room ``messages`` belong to (what :meth:`MessageRepository.restore` takes); ValueError if several."""
    room_ids = {message.room_id for message in messages}
    if len(room_ids) != 1:
        raise ValueError("restore takes the messages of one room")
    return room_ids.pop()


class UserRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, username: str, password_hash: bytes) -> User:
        """Create a user. Raises Conflict if the name is taken, ignoring case."""

    @abc.abstractmethod
    async def get(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    async def get_many(self, user_ids: Collection[str]) -> dict[str, User]:
        """The users among ``user_ids``, by id, in one query."""

    @abc.abstractmethod
    async def get_by_username(self, username: str) -> User | None:
        """Find a user by name, ignoring case."""

    @abc.abstractmethod
    async def set_password(self, user_id: str, password_hash: bytes) -> None: ...

    @abc.abstractmethod
    async def set_disabled(self, user_id: str, disabled: bool) -> None: ...

    @abc.abstractmethod
    async def set_admin(self, user_id: str, admin: bool) -> None:
        """Make or unmake a site administrator."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many accounts there are (disabled ones too)."""


class SessionRepository(abc.ABC):
    """Server-side sessions, stored under a hash of the token the cookie carries.

    A session is live until ``expires_at`` (absolute) and until
    ``idle_expires_at`` (pushed forward by :meth:`touch`), whichever comes first.
    """

    @abc.abstractmethod
    async def add(
        self,
        session_id: str,
        user_id: str,
        expires_at: datetime.datetime,
        idle_expires_at: datetime.datetime | None = None,
    ) -> Session:
        """Store a session; without ``idle_expires_at`` it idles out only at ``expires_at``."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The live session with this id; None if unknown or expired (either way)."""

    @abc.abstractmethod
    async def get_many(self, session_ids: Collection[str]) -> dict[str, Session]:
        """The live sessions among ``session_ids``, by id, in one query."""

    @abc.abstractmethod
    async def live(self, session_ids: Collection[str]) -> set[str]:
        """Which of ``session_ids`` are live now, in one query."""

    @abc.abstractmethod
    async def touch(self, session_id: str, idle_expires_at: datetime.datetime) -> None:
        """Activity: move the idle end (capped at the absolute end)."""

    async def touch_many(self, idle_ends: Mapping[str, datetime.datetime]) -> None:
        """Activity of many sessions: move each one's idle end (capped at its absolute end)."""
        for session_id, idle_expires_at in idle_ends.items():
            await self.touch(session_id, idle_expires_at)

    @abc.abstractmethod
    async def delete(self, session_id: str) -> None: ...

    @abc.abstractmethod
    async def delete_for_user(self, user_id: str, keep: str | None = None) -> list[str]:
        """End every session of ``user_id`` but ``keep``; return the ids ended."""

    @abc.abstractmethod
    async def purge_expired(self) -> int:
        """Delete expired sessions, either way (no TTL indexes: FerretDB v1 lacks them)."""

    @abc.abstractmethod
    async def list_live(self, user_id: str | None = None, limit: int = 1000) -> list[Session]:
        """The live sessions of ``user_id`` (of everyone if None), newest first, at most ``limit``."""

    @abc.abstractmethod
    async def count_live(self) -> int:
        """How many sessions are live now."""


class RoomRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, name: str, creator: User, kind: RoomKind = RoomKind.PUBLIC) -> Room:
        """Create a room. Raises Conflict if its name is taken, ignoring case, by a room whose name is unique.

        Public rooms and DMs have unique names: no two of them share one,
        ignoring case (a public name is public knowledge anyway, and a DM is
        found by its name). A private room's name is reserved against
        nobody, or refusing it would tell an outsider the private room
        exists: a private room may share its name with any room, and any
        room with a private room.
        """

    @abc.abstractmethod
    async def get(self, room_id: str) -> Room | None: ...

    @abc.abstractmethod
    async def get_many(self, room_ids: Collection[str]) -> dict[str, Room]:
        """The rooms among ``room_ids``, by id, in one query."""

    @abc.abstractmethod
    async def get_by_name(self, name: str) -> Room | None:
        """The public room or DM of this name, ignoring case; never a private room (see :meth:`add`)."""

    @abc.abstractmethod
    async def named(self, name: str) -> list[Room]:
        """Every room of this name, ignoring case, of every kind, oldest first (for site administrators)."""

    @abc.abstractmethod
    async def list(self, search: str = "", limit: int = 10_000, offset: int = 0) -> list[Room]:
        """Public rooms whose names contain ``search`` (ignoring case), newest first, a page of them.

        Private rooms and DMs are never listed.
        """

    @abc.abstractmethod
    async def update(self, room_id: str, *, name: str | None = None, topic: str | None = None) -> Room | None:
        """Rename a room and/or set its topic; None if there is no such room, Conflict if the name is taken.

        Taken as :meth:`add` means it: a private room can take any name, and
        any room a private room's name. A room keeps its kind.
        """

    @abc.abstractmethod
    async def set_archived(self, room_id: str, archived_at: datetime.datetime | None) -> Room | None:
        """Archive a room as of ``archived_at`` (None: unarchive it); the room after, or None if there is none.

        While a room is archived, :meth:`MessageRepository.add_many` and
        :meth:`MessageRepository.revise` refuse it with RoomArchived.
        """

    @abc.abstractmethod
    async def delete(self, room_id: str) -> bool:
        """Delete a room with everything in it: messages, memberships, bans, mentions, moderation log.

        Whether the room existed. Messages cannot be added to it from the
        moment this starts; a deletion interrupted part-way (a crash, an
        outage) is finished by deleting again.
        """

    @abc.abstractmethod
    async def count(self) -> int:
        """How many rooms there are, of every kind (DMs too)."""


class MembershipRepository(abc.ABC):
    """Who belongs to which room, with what role: read by room (members) and by user (their rooms)."""

    @abc.abstractmethod
    async def add(self, room_id: str, user: User, role: Role = Role.MEMBER) -> Membership:
        """Make ``user`` a member; a member already keeps their membership (and role), which is returned."""

    @abc.abstractmethod
    async def get(self, room_id: str, user_id: str) -> Membership | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Membership]:
        """The memberships among ``(room_id, user_id)`` pairs, in one query."""

    @abc.abstractmethod
    async def set_role(self, room_id: str, user_id: str, role: Role) -> Membership | None:
        """Change a member's role; None if not a member."""

    @abc.abstractmethod
    async def remove(self, room_id: str, user_id: str) -> bool:
        """End a membership; whether there was one."""

    @abc.abstractmethod
    async def rooms_of(self, user_id: str) -> list[Membership]:
        """Every membership of ``user_id``, oldest first."""

    @abc.abstractmethod
    async def members_of(self, room_id: str, limit: int = 1000) -> list[Membership]:
        """A room's members, oldest first, at most ``limit``."""

    @abc.abstractmethod
    async def counts(self, room_ids: Collection[str]) -> dict[str, int]:
        """How many members each room has (rooms without members are left out)."""

    @abc.abstractmethod
    async def mark_read(self, room_id: str, user_id: str, seq: int) -> int | None:
        """Move the member's read marker up to ``seq`` (never back); the marker after, or None if not a member."""

    @abc.abstractmethod
    async def advance_read_many(self, markers: Mapping[tuple[str, str], int]) -> None:
        """Move many members' markers, by (room id, user id), up to their seqs (never back), in one write.

        Pairs that are no membership are left alone.
        """


class MentionRepository(abc.ABC):
    """Which stored messages mention whom: one small record per mention, dropped once read.

    Unread mentions are then counted from the reader's few records, never by
    scanning history.
    """

    @abc.abstractmethod
    async def add_many(self, mentions: Collection[tuple[str, str, int]]) -> None:
        """Record ``(room_id, user_id, seq)`` mentions (recording one twice keeps one)."""

    @abc.abstractmethod
    async def counts(self, user_id: str, read_seqs: Mapping[str, int]) -> dict[str, int]:
        """Mentions of ``user_id`` after each room's read seq, in one query (rooms without any left out)."""

    @abc.abstractmethod
    async def clear(self, room_id: str, user_id: str, up_to_seq: int) -> None:
        """Forget the mentions of ``user_id`` in the room at or below ``up_to_seq`` (they were read)."""


class ModerationLog(abc.ABC):
    @abc.abstractmethod
    async def add(self, entry: ModerationEntry) -> None: ...

    @abc.abstractmethod
    async def list(self, room_id: str, limit: int = 100) -> list[ModerationEntry]:
        """A room's moderation, newest first."""


class BanRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, room_id: str, user_id: str, by_user_id: str) -> Ban:
        """Ban ``user_id`` from the room; banning again keeps the first ban."""

    @abc.abstractmethod
    async def get(self, room_id: str, user_id: str) -> Ban | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Ban]:
        """The bans among these (room id, user id) pairs, in one query."""

    @abc.abstractmethod
    async def remove(self, room_id: str, user_id: str) -> bool: ...


class MessageRepository(abc.ABC):
    async def add(self, new: NewMessage) -> tuple[Message, bool]:
        """Store a message, assigning the room's next ``seq``.

        Idempotent on ``(room_id, user_id, client_id)``: when that message
        exists already, return it with ``False`` and store nothing. Returns
        only once the write is durable per the backend's settings, because
        the caller acknowledges it to the sender.
        """
        [result] = await self.add_many([new])
        return result

    @abc.abstractmethod
    async def add_many(self, news: Sequence[NewMessage]) -> list[tuple[Message, bool]]:
        """Store messages together, as :meth:`add` stores one, each room's in the order given.

        The batch may mix rooms: a busy process stores every room's waiting
        messages in one write, not one per room. A room's seqs follow
        each other (unless another process writes in between). What raises
        may have stored some of them: the senders retry with their
        client_ids, which finds those. A batch touching an archived room
        stores nothing and raises RoomArchived naming the archived rooms;
        one touching a room that does not exist, RoomGone (a LookupError)
        naming the missing ones.
        """

    @abc.abstractmethod
    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        """The newest ``limit`` messages in ascending seq, and whether older ones exist."""

    @abc.abstractmethod
    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        """Messages with ``seq > since_seq`` ascending, at most ``limit``, and whether more follow."""

    async def acknowledged_seqs(self, room_ids: Collection[str]) -> dict[str, int]:
        """Each room's seq counter, in one query: every seq ``add_many`` has returned is at or below it.

        What a reader compares with what it was delivered: a message is only
        acknowledged and published after ``add_many`` returns. A room that
        does not exist is left out.
        """
        return {room_id: counters.seq for room_id, counters in (await self.counters(room_ids)).items()}

    @abc.abstractmethod
    async def counters(self, room_ids: Collection[str]) -> dict[str, RoomCounters]:
        """Each room's seq and rev counters, in one query, by the rooms' ids.

        One query for many rooms: with thousands of rooms, a query per room
        (or one that scans messages) every few seconds is what a database
        notices. A room that does not exist is left out.
        """

    @abc.abstractmethod
    async def get(self, room_id: str, message_id: str) -> Message | None:
        """The message with this id in this room, as stored now."""

    @abc.abstractmethod
    async def revise(self, revision: Revision) -> Message | None:
        """Apply an edit or a deletion; None if the room has no such message, RoomArchived if it is archived.

        The message gets the room's next rev (counters.rev moves first, so a
        reader that saw the counter at R before this finished is sent it
        live). A deletion empties the body in storage. Revs of one message
        only ever grow, even when two revisions race.
        """

    @abc.abstractmethod
    async def revised_after(self, room_id: str, rev: int, limit: int) -> tuple[list[Message], bool]:
        """Messages revised after ``rev``, by ascending rev, at most ``limit``, and whether more follow."""

    @abc.abstractmethod
    async def restore(self, messages: Sequence[Message]) -> int:
        """Store messages exactly as they were (an import): seq, times, edits, deletion, rev and html kept.

        For one room that exists (RoomGone otherwise), archived or not. A
        seq the room holds already is skipped, as is a message whose
        ``(user_id, client_id)`` it holds, so restoring twice stores nothing
        the second time. The room's seq and rev counters and its latest
        message time move up to cover what was stored (never down). The
        stored messages get ids of the backend's own making (the given ids
        may be taken: an import next to the room it was exported from).
        Returns how many were stored.
        """

    @abc.abstractmethod
    async def count(self) -> int:
        """How many messages are stored, in every room (deleted ones keep their place and count)."""


class Storage(abc.ABC):
    """One backend's repositories plus its connection lifecycle."""

    users: UserRepository
    sessions: SessionRepository
    rooms: RoomRepository
    messages: MessageRepository
    memberships: MembershipRepository
    bans: BanRepository
    moderation: ModerationLog
    mentions: MentionRepository

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections and create schema/indexes; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the database answers; raise Unavailable otherwise."""
