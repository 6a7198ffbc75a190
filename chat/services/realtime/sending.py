"""A socket's sends: checked, counted, stored in the order sent, acked, published; and edits and deletions.

Sends are pipelined (up to ``SENDS_IN_FLIGHT`` handed to storage and not yet
acked), so a refused one holds back those after it until it is sent again
(:class:`SendHold`): "stored in the order sent" is a rule of the socket, not
a matter of timing. Part of :class:`~chat.services.realtime.connection.RoomConnection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ... import metrics
from ...errors import ChatError, Forbidden, RateLimited, Unavailable
from ...models import Message, Room, User
from ...wire.actions import Action
from ...wire.client import DeleteFrame, EditFrame, SendFrame
from ...wire.refusals import Close
from ...wire.server import ack_frame

if TYPE_CHECKING:
    from .connection import Connections, Transport

# Sends of one socket handed to storage and not yet acked; the next send
# waits for one of them (it is still read meanwhile: see INBOX_FRAMES).
SENDS_IN_FLIGHT = 16
# A send refused for a while (rate limited, storage busy) holds back the ones
# sent after it on the same socket until it is sent again, or until this long
# after the client was told it may retry (a client that gave up on it).
SEND_HOLD_GRACE_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendHold:
    """The first send of a socket refused for now; the sends after it wait for it.

    Sends are pipelined, so when one is refused the next ones are already on
    their way, and a rate limit that refills between two of them would store
    a later message before the refused one. Holding them back makes "stored
    in the order sent" a rule of the socket, not a matter of timing.
    """

    client_id: str
    error: ChatError
    retry_at: float

    def refusal(self, now: float) -> ChatError:
        if isinstance(self.error, RateLimited):
            return RateLimited(max(0.0, self.retry_at - now))
        return self.error


class SendPipeline:
    """The sending half of a room connection (mixed into RoomConnection, which sets these)."""

    transport: Transport
    user: User
    room: Room
    closed: bool
    _hub: Connections
    _member: bool
    _sends_in_flight: asyncio.Semaphore
    _completions: set[asyncio.Task[None]]
    _hold: SendHold | None

    async def _still_allowed(self) -> bool:
        raise NotImplementedError

    def _started(self) -> None:
        raise NotImplementedError

    def _finished(self) -> None:
        raise NotImplementedError

    def _refuse(self, exc: ChatError, client_id: str | None) -> None:
        raise NotImplementedError

    async def _send(self, frame: SendFrame) -> None:
        read_at = time.perf_counter()
        if not await self._still_allowed():
            return
        self._check_hold(frame.client_id)
        try:
            await self._hub.limiter.take(Action.SEND, self.user.id)
        except RateLimited as exc:
            self._hold_after(frame.client_id, exc, exc.retry_after)
            raise
        # Checked and rendered before taking a place: still in this socket's order.
        new = await self._hub.messages.prepare(self.user, self.room, frame.client_id, frame.body)
        if not self._member:
            # Speaking in a public room joins it (a private room's socket is a member's already).
            if self.room.listed:
                await self._hub.memberships.join(self.user, self.room)
            self._member = True
        # A socket closed while this send was being rendered (a Markdown body
        # renders in a worker process) still stores it: the person sent it and
        # went on, maybe to another room. One closed while it waited for a
        # place is dropped: the client re-sends what was not acked.
        closed_before = self.closed
        await self._sends_in_flight.acquire()
        if self.closed and not closed_before:
            self._sends_in_flight.release()
            return
        stored = self._hub.messages.submit(new)
        # Queued for storage now, in this socket's order; the rest finishes
        # on its own while the next frame is handled.
        self._started()
        completion = asyncio.create_task(
            self._complete(stored, frame.client_id, read_at), name=f"send-{frame.client_id}"
        )
        self._completions.add(completion)
        completion.add_done_callback(self._completions.discard)

    async def _complete(self, stored: Awaitable[tuple[Message, bool]], client_id: str, read_at: float) -> None:
        try:
            try:
                message, _ = await stored
            except ChatError as exc:
                if isinstance(exc, Unavailable):
                    self._hold_after(client_id, exc, 0.0)
                self._refuse(exc, client_id)
                return
            if not self.closed:
                self.transport.send_text(ack_frame(message))
                metrics.SEND_TO_ACK.observe(time.perf_counter() - read_at)
            # Publish even if this socket closed meanwhile (the message is
            # stored, the room must see it), and even for a resend of a
            # stored message: the process that stored it may have died before
            # publishing, and receivers drop any seq they already delivered.
            await self._hub.fanout.publish_message(message)
        except Exception:
            log.exception("closing socket: a send from %s in room %s failed", self.user.username, self.room.id)
            self.transport.close(Close.INTERNAL_ERROR, "internal error; reconnect shortly")
        finally:
            self._sends_in_flight.release()
            self._finished()

    def _check_hold(self, client_id: str) -> None:
        """Refuse a send that would overtake one refused earlier (see :class:`SendHold`)."""
        hold = self._hold
        if hold is None:
            return
        now = self._hub.clock()
        if client_id == hold.client_id or now > hold.retry_at + SEND_HOLD_GRACE_SECONDS:
            self._hold = None
            return
        raise hold.refusal(now)

    def _hold_after(self, client_id: str, error: ChatError, retry_after: float) -> None:
        if self._hold is None:
            self._hold = SendHold(client_id, error, self._hub.clock() + retry_after)

    async def _revise(self, frame: EditFrame | DeleteFrame) -> None:
        """Edit or delete an own message; the room (this socket too) is told with ``message_updated``."""
        if not await self._still_allowed():
            return
        # Counted as sends: an edit costs the room what a message does.
        await self._hub.limiter.take(Action.SEND, self.user.id)
        messages = self._hub.messages
        if isinstance(frame, EditFrame):
            revised = await messages.edit(self.user, self.room, frame.id, frame.body)
        else:
            try:
                revised = await messages.delete(self.user, self.room, frame.id)
            except Forbidden:
                # Someone else's: the room's owner and moderators may (Forbidden for anyone else).
                revised = await self._hub.moderation.delete_message(self.user, self.room, frame.id)
        if revised.rev:
            await self._hub.fanout.publish_revision(revised)
