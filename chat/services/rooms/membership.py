"""Who may see and speak in a room: membership, private rooms, direct messages and bans.

A public room is listed and readable by every signed-in user; anyone not
banned joins it by asking, or by speaking in it. A private room and a direct
message (DM) exist only for their members: to anyone else they answer
exactly as a room that does not exist does. Members of a private room invite
others by username; a DM is the one room of two people, made on first use.

Leaving, being removed or being banned ends that person's sockets in the
room on every process at once: this service publishes
:class:`~chat.events.MemberRemoved`, which the relay turns into closed
sockets here and an announcement on the room's channel (retried through a
broker outage; chat.services.realtime.relay). A removal stored while the
announcement could not go out still takes effect: every process re-checks
the memberships of its open sockets periodically and after the broker comes
back (:meth:`Memberships.readable`, chat.services.realtime.revocation).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from ...errors import Conflict, Forbidden, NotFound, ValidationError
from ...events import EventBus, MemberRemoved, MembershipNotice, RoomsChanged
from ...models import Membership, ModerationAction, ModerationEntry, Role, Room, RoomKind, User, utcnow
from ...storage import Storage
from ...wire.actions import Action
from ..batching import batched_reads
from ..limits import Limiter
from .catalog import Rooms

# A DM's room name: both user ids in order, so both people find the same room.
DM_PREFIX = "dm:"
# Roles that may remove, ban and (later) moderate.
MANAGERS = frozenset({Role.OWNER, Role.MODERATOR})
# Memberships or bans looked up in one query at most.
PAIRS_PER_QUERY = 200


def can_moderate(user: User, room: Room, membership: Membership | None) -> bool:
    """Whether ``user`` (a member as ``membership`` says, or not one) may moderate ``room``."""
    if room.kind is RoomKind.DIRECT:
        return False
    return room.creator_id == user.id or user.admin or (membership is not None and membership.role in MANAGERS)


async def record_moderation(
    storage: Storage, actor: User, room: Room, action: ModerationAction, target: str = "", detail: str = ""
) -> None:
    """Store one moderation action in the room's log, with who did it and when."""
    await storage.moderation.add(ModerationEntry(room.id, actor.id, actor.username, action, target, detail, utcnow()))


def _chunks(pairs: Sequence[tuple[str, str]]) -> Iterator[Sequence[tuple[str, str]]]:
    # One query per chunk: SQLite caps the parameters of a statement.
    for start in range(0, len(pairs), PAIRS_PER_QUERY):
        yield pairs[start : start + PAIRS_PER_QUERY]


def dm_name(first: User, second: User) -> str:
    low, high = sorted((first.id, second.id))
    return f"{DM_PREFIX}{low}:{high}"


class Memberships:
    def __init__(
        self,
        storage: Storage,
        rooms: Rooms,
        events: EventBus,
        limiter: Limiter | None = None,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._events = events
        self._limiter = limiter
        # A handshake's access check, asked by thousands of sockets at once
        # after a restart: read together. Always read, never remembered, so a
        # ban or a removal counts from the moment it is stored.
        self._ban_reads = batched_reads(lambda pairs: self._storage.bans.get_many(pairs), name="ban look-ups")
        self._membership_reads = batched_reads(
            lambda pairs: self._storage.memberships.get_many(pairs), name="membership look-ups"
        )

    async def _told(self, room: Room, change: str, user_id: str, username: str | None = None) -> None:
        """Tell the room's sockets that someone joined, left, or was removed or banned."""
        if username is None:
            user = await self._storage.users.get(user_id)
            username = user.username if user else "someone"
        await self._events.publish(MembershipNotice(room.id, change, user_id, username))

    async def _changed(self, *user_ids: str) -> None:
        """Their lists of rooms changed (their sidebars reload them)."""
        for user_id in user_ids:
            await self._events.publish(RoomsChanged(user_id))

    async def _announce_removal(self, room_id: str, user_id: str) -> None:
        await self._events.publish(MemberRemoved(room_id, user_id))

    async def room_for(self, user: User, room_id: str) -> Room:
        """The room, if ``user`` may see it.

        NotFound for a room that does not exist and, the same, for a private
        room or DM ``user`` is not in: outsiders cannot tell the two apart.
        Forbidden for a public room ``user`` was banned from.
        """
        room = await self._rooms.get(room_id)
        pair = (room.id, user.id)
        if room.listed:
            if await self._ban_reads.outcome(pair, pair) is not None:
                raise Forbidden("You were banned from this room.")
            return room
        if await self._membership_reads.outcome(pair, pair) is None:
            raise NotFound(f"no room {room_id!r}")
        return room

    async def readable(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (room id, user id) pairs may still be read: a public room unless banned, else a member's.

        For re-checking open sockets in bulk (a removal or ban whose
        announcement was lost): a few queries, whatever the number of pairs.
        A room that no longer exists is readable by nobody.
        """
        wanted = list(pairs)
        rooms = await self._rooms.get_many({room_id for room_id, _ in wanted})
        public = [pair for pair in wanted if pair[0] in rooms and rooms[pair[0]].listed]
        private = [pair for pair in wanted if pair[0] in rooms and not rooms[pair[0]].listed]
        readable: set[tuple[str, str]] = set()
        for chunk in _chunks(private):
            readable.update(await self._storage.memberships.get_many(chunk))
        banned: set[tuple[str, str]] = set()
        for chunk in _chunks(public):
            banned.update(await self._storage.bans.get_many(chunk))
        readable.update(pair for pair in public if pair not in banned)
        return readable

    async def membership(self, user: User, room: Room) -> Membership | None:
        return await self._storage.memberships.get(room.id, user.id)

    async def join(self, user: User, room: Room) -> Membership:
        """Join a public room (a member already stays one)."""
        if not room.listed:
            raise NotFound(f"no room {room.id!r}")  # private rooms are joined by invitation only
        if await self._storage.bans.get(room.id, user.id) is not None:
            raise Forbidden("You were banned from this room.")
        existing = await self._storage.memberships.get(room.id, user.id)
        if existing is not None:
            return existing
        membership = await self._storage.memberships.add(room.id, user)
        await self._changed(user.id)
        await self._told(room, "joined", user.id, user.username)
        return membership

    async def leave(self, user: User, room: Room) -> None:
        if room.kind is RoomKind.DIRECT:
            raise ValidationError("A direct conversation cannot be left.")
        if room.creator_id == user.id:
            raise ValidationError("The owner keeps the room: name a moderator, or ask an administrator.")
        if await self._storage.memberships.remove(room.id, user.id):
            await self._announce_removal(room.id, user.id)
            await self._changed(user.id)
            await self._told(room, "left", user.id, user.username)

    async def invite(self, inviter: User, room: Room, username: str) -> Membership:
        """Add ``username`` to a room ``inviter`` belongs to."""
        if room.kind is RoomKind.DIRECT:
            raise ValidationError("A direct conversation is for two people.", field="username")
        if await self._storage.memberships.get(room.id, inviter.id) is None:
            raise Forbidden("Only members may invite others.")
        invited = await self._storage.users.get_by_username(username.strip())
        if invited is None or invited.disabled:
            raise ValidationError(f"There is no user named {username.strip()!r}.", field="username")
        if await self._storage.bans.get(room.id, invited.id) is not None:
            raise ValidationError(f"{invited.username} is banned from this room.", field="username")
        membership = await self._storage.memberships.add(room.id, invited)
        await self._changed(invited.id)
        await self._told(room, "joined", invited.id, invited.username)
        return membership

    async def remove(self, actor: User, room: Room, user_id: str) -> None:
        """Take ``user_id`` out of the room (the owner or a moderator may; never the owner)."""
        await self._require_manager(actor, room, user_id)
        removed = await self._storage.memberships.remove(room.id, user_id)
        if removed:
            await self._log(actor, room, ModerationAction.REMOVE_MEMBER, user_id)
        # Announced (and their sidebars told) even when they were gone already:
        # asking again after an outage must still cut them off everywhere.
        await self._announce_removal(room.id, user_id)
        await self._changed(user_id)
        if removed:
            await self._told(room, "removed", user_id)

    async def ban(self, actor: User, room: Room, user_id: str) -> None:
        """Remove ``user_id`` and keep them out (of a public room too)."""
        await self._require_manager(actor, room, user_id)
        await self._storage.bans.add(room.id, user_id, actor.id)
        await self._storage.memberships.remove(room.id, user_id)
        await self._log(actor, room, ModerationAction.BAN, user_id)
        # Announced even if they were not a member: a public room's readers need not be.
        await self._announce_removal(room.id, user_id)
        await self._changed(user_id)
        await self._told(room, "banned", user_id)

    async def find_direct(self, user: User, other_username: str) -> tuple[User, Room | None]:
        """The named user, and the DM of ``user`` with them if it exists (None: not made yet).

        Changes nothing. NotFound for an unknown or disabled user,
        ValidationError for ``user`` themselves.
        """
        other = await self._storage.users.get_by_username(other_username)
        if other is None or other.disabled:
            raise NotFound(f"no user {other_username!r}")
        if other.id == user.id:
            raise ValidationError("A direct conversation needs someone else.")
        room = await self._storage.rooms.get_by_name(dm_name(user, other))
        if room is None or room.kind is not RoomKind.DIRECT:
            return other, None
        if await self._storage.memberships.get(room.id, user.id) is None:
            return other, None
        return other, room

    async def direct(self, user: User, other_username: str) -> Room:
        """The DM of ``user`` and the named user, made on first use (limited per user: it lands in a sidebar)."""
        other, found = await self.find_direct(user, other_username)
        if found is not None:
            return found
        name = dm_name(user, other)
        room = await self._storage.rooms.get_by_name(name)
        if room is None:
            if self._limiter is not None:
                await self._limiter.take(Action.DM_CREATION, user.id)
            try:
                room = await self._storage.rooms.add(name, user, RoomKind.DIRECT)
            except Conflict:  # the other person opened it at the same moment
                room = await self._storage.rooms.get_by_name(name)
        if room is None or room.kind is not RoomKind.DIRECT:
            raise NotFound(f"no conversation with {other_username!r}")
        new = [person for person in (user, other) if await self._storage.memberships.get(room.id, person.id) is None]
        for person in new:
            await self._storage.memberships.add(room.id, person)
        await self._changed(*(person.id for person in new))
        return room

    async def members(self, room: Room) -> list[Membership]:
        return await self._storage.memberships.members_of(room.id)

    async def rooms_of(self, user: User) -> list[tuple[Room, Membership]]:
        """The rooms ``user`` belongs to, with their membership, in the order joined."""
        memberships = await self._storage.memberships.rooms_of(user.id)
        rooms = await self._rooms.get_many([m.room_id for m in memberships])
        # A membership outliving its room is left out.
        return [(rooms[m.room_id], m) for m in memberships if m.room_id in rooms]

    async def _log(self, actor: User, room: Room, action: ModerationAction, target: str) -> None:
        await record_moderation(self._storage, actor, room, action, target)

    async def _require_manager(self, actor: User, room: Room, user_id: str) -> None:
        if room.kind is RoomKind.DIRECT:
            raise ValidationError("Nobody manages a direct conversation.")
        if user_id == room.creator_id or user_id == actor.id:
            raise Forbidden("The owner cannot be removed, and nobody removes themselves (leave instead).")
        if not can_moderate(actor, room, await self._storage.memberships.get(room.id, actor.id)):
            raise Forbidden("Only the room's owner and moderators may do that.")
