"""Domain events (chat.events) carried to the sockets of every process.

The services below realtime publish what happened and know nothing of
sockets or brokers; this is where each such event becomes a frame or a
broker message:

* :class:`~chat.events.MemberRemoved`: this process closes the person's
  sockets in the room at once, and every other process is told on the room's
  channel (retried through a broker outage; the periodic re-check of open
  sockets covers a loss beyond that);
* :class:`~chat.events.MembershipNotice`: a ``membership`` frame to the
  room's sockets (best effort, like a typing notice);
* :class:`~chat.events.RoomsChanged` and :class:`~chat.events.ReadMoved`: an
  event on the person's channel, for every page they have open;
* :class:`~chat.events.RoomChanged`: every process forgets its cached copy
  (``chat:rooms``) and, for a rename or a topic, the room's sockets get
  ``room_updated``.
"""

from __future__ import annotations

import logging

from ...broker import ROOMS_CHANNEL, Broker, user_channel
from ...events import EventBus, MemberRemoved, MembershipNotice, ReadMoved, RoomChanged, RoomsChanged
from ...wire.events import changed_room, member_removed_event, read_event, room_changed_event, rooms_changed_event
from ...wire.server import membership_frame, room_updated_frame
from ..rooms.catalog import Rooms
from .fanout import Fanout

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, fanout: Fanout, broker: Broker, rooms: Rooms) -> None:
        self._fanout = fanout
        self._broker = broker
        self._rooms = rooms

    def subscribe(self, events: EventBus) -> None:
        events.subscribe(MemberRemoved, self.member_removed)
        events.subscribe(MembershipNotice, self.membership_notice)
        events.subscribe(RoomsChanged, self.rooms_changed)
        events.subscribe(ReadMoved, self.read_moved)
        events.subscribe(RoomChanged, self.room_changed)

    async def start(self) -> None:
        await self._fanout.watch(ROOMS_CHANNEL, self._heard_room_changed)

    async def member_removed(self, event: MemberRemoved) -> None:
        await self._fanout.announce(event.room_id, member_removed_event(event.user_id))

    async def membership_notice(self, event: MembershipNotice) -> None:
        frame = membership_frame(event.change, event.user_id, event.username)
        await self._fanout.publish_ephemeral(event.room_id, frame)

    async def rooms_changed(self, event: RoomsChanged) -> None:
        # Lost in an outage, a page's list lags until its stream resyncs (it does after the broker returns).
        await self._broker.publish(user_channel(event.user_id), rooms_changed_event())

    async def read_moved(self, event: ReadMoved) -> None:
        # The marker itself is stored; a badge elsewhere lags until that page's stream resyncs.
        await self._broker.publish(
            user_channel(event.user_id), read_event(event.room_id, event.read_seq, event.mentions)
        )

    async def room_changed(self, event: RoomChanged) -> None:
        """Forget the room here, show a renamed room to its sockets, and tell every process to forget it.

        Raises Unavailable when the other processes could not be told: they
        then see the change when their cached copy expires (a minute at most).
        """
        self._rooms.forget(event.room_id)
        if event.room is not None:
            await self._fanout.publish_ephemeral(event.room_id, room_updated_frame(event.room))
        await self._broker.publish(ROOMS_CHANNEL, room_changed_event(event.room_id))

    def _heard_room_changed(self, payload: str) -> None:
        try:
            room_id = changed_room(payload)
        except (ValueError, TypeError):
            log.warning("dropping a malformed room change on %s", ROOMS_CHANNEL)
            return
        self._rooms.forget(room_id)
