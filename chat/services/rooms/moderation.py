"""What a room's owner and moderators may do: delete any message, rename, set the topic, name moderators.

Every action is checked here (``forbidden`` to anyone else), stored in the
room's moderation log with who did it and when, and shown live: a deleted
message as ``message_updated``, a rename or topic as ``room_updated`` to the
room's sockets. Rooms are cached by every process, so a change is published
as :class:`~chat.events.RoomChanged`, and each process forgets the room
(chat.services.realtime.relay).
(Removing and banning members is :mod:`chat.services.rooms.membership`'s, which
logs them too.)
"""

from __future__ import annotations

from ...errors import Conflict, Forbidden, NotFound, ValidationError
from ...events import EventBus, RoomChanged
from ...models import Membership, Message, ModerationAction, ModerationEntry, Role, Room, User
from ...storage import Storage
from ...wire.actions import Action
from ..conversation.messages import Messages
from ..limits import Limiter
from .catalog import Rooms, clean_room_name, clean_topic
from .membership import can_moderate, record_moderation


class Moderation:
    def __init__(
        self, storage: Storage, rooms: Rooms, messages: Messages, events: EventBus, limiter: Limiter | None = None
    ) -> None:
        self._storage = storage
        self._limiter = limiter
        self._rooms = rooms
        self._messages = messages
        self._events = events

    async def may_moderate(self, user: User, room: Room) -> bool:
        return can_moderate(user, room, await self._storage.memberships.get(room.id, user.id))

    async def delete_message(self, actor: User, room: Room, message_id: str) -> Message:
        """Delete anyone's message in the room."""
        await self._require(actor, room)
        deleted = await self._messages.delete(actor, room, message_id, as_moderator=True)
        await self._log(actor, room, ModerationAction.DELETE_MESSAGE, target=message_id)
        return deleted

    async def rename(self, actor: User, room: Room, name: str) -> Room:
        await self._require(actor, room)
        name = clean_room_name(name)
        await self._take_change(actor)
        try:
            changed = await self._storage.rooms.update(room.id, name=name)
        except Conflict:
            raise ValidationError("A room with that name exists already.", field="name") from None
        return await self._changed(actor, changed, ModerationAction.RENAME, name)

    async def set_topic(self, actor: User, room: Room, topic: str) -> Room:
        await self._require(actor, room)
        topic = clean_topic(topic)
        await self._take_change(actor)
        changed = await self._storage.rooms.update(room.id, topic=topic)
        return await self._changed(actor, changed, ModerationAction.SET_TOPIC, topic)

    async def set_role(self, actor: User, room: Room, user_id: str, role: Role) -> Membership:
        """The owner names moderators (or makes them members again)."""
        if room.creator_id != actor.id and not actor.admin:
            raise Forbidden("Only the room's owner names moderators.")
        if role is Role.OWNER or user_id == room.creator_id:
            raise ValidationError("A room has one owner: its creator.")
        membership = await self._storage.memberships.set_role(room.id, user_id, role)
        if membership is None:
            raise ValidationError("Only members can be moderators.")
        await self._log(actor, room, ModerationAction.SET_ROLE, target=user_id, detail=role.value)
        return membership

    async def log(self, room: Room) -> list[ModerationEntry]:
        return await self._storage.moderation.list(room.id)

    async def _take_change(self, actor: User) -> None:
        # Every rename or topic reaches each socket of the room and the log: limited like sends.
        if self._limiter is not None:
            await self._limiter.take(Action.ROOM_CHANGE, actor.id)

    async def _require(self, actor: User, room: Room) -> None:
        if not await self.may_moderate(actor, room):
            raise Forbidden("Only the room's owner and moderators may do that.")

    async def _changed(self, actor: User, room: Room | None, action: ModerationAction, detail: str) -> Room:
        if room is None:
            raise NotFound("the room is gone")
        await self._log(actor, room, action, detail=detail)
        await self._events.publish(RoomChanged(room.id, room))
        return room

    async def announce_changed(self, room_id: str) -> bool:
        """The stored room changed (archived, deleted): every process forgets its copy.

        Returns False if the broker could not be told: other processes then
        see the change when their cached copy expires (a minute at most).
        """
        return await self._events.publish(RoomChanged(room_id))

    async def _log(self, actor: User, room: Room, action: ModerationAction, target: str = "", detail: str = "") -> None:
        await record_moderation(self._storage, actor, room, action, target, detail)
