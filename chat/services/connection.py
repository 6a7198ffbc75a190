"""What one WebSocket in one room does, independent of Tornado.

The Tornado handler owns the socket and forwards frames here; this class owns
the protocol: hello, history and resumption, sends with acks, rate limits and
error frames, and ordered, duplicate-free delivery of the room's messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from ..errors import RateLimited, TooLarge, Unavailable, ValidationError
from ..models import Room, User
from .. import protocol
from .accounts import Accounts
from .fanout import Fanout
from .messages import Messages
from .presence import Presence
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455 section 7.4.1, and 1013 from the IANA registry).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class Transport(Protocol):
    def send_text(self, text: str) -> None:
        """Queue one text frame; never blocks."""

    def close(self, code: int, reason: str) -> None: ...


class RoomConnection:
    def __init__(
        self,
        transport: Transport,
        *,
        user: User,
        room: Room,
        session_token: str,
        messages: Messages,
        accounts: Accounts,
        fanout: Fanout,
        presence: Presence,
        instance: str,
        rate_limit: TokenBucket,
        session_recheck_seconds: float,
    ) -> None:
        self.transport = transport
        self.user = user
        self.room = room
        self._session_token = session_token
        self._messages = messages
        self._accounts = accounts
        self._fanout = fanout
        self._presence = presence
        self._instance = instance
        self._rate_limit = rate_limit
        self._session_recheck = session_recheck_seconds
        self._session_checked_at = time.monotonic()
        # The highest seq this client has been sent; live frames at or below
        # it are duplicates of history it already has.
        self.last_seq = 0
        # While history is being sent, live frames wait here so the client
        # sees one ordered stream.
        self._pending: list[tuple[int, str]] | None = None
        self._sync_lock = asyncio.Lock()
        self._joined = False
        self._counted_present = False
        self.closed = False
        # Clear while a client frame is being handled. Frames are handled one
        # at a time (Tornado awaits on_message before reading the next).
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle --------------------------------------------------------

    async def open(self, since: int | None) -> None:
        """Greet the client, join the room's feed and send history."""
        self._pending = []
        await self._fanout.join(self.room.id, self)
        self._joined = True
        if self.closed:  # the client left while we were joining: undo it
            await self.close()
            return
        self.transport.send_text(
            protocol.hello_frame(self.room, self.user, self._instance, await self._messages.stored_seq(self.room.id))
        )
        await self._send_history(since)
        users = await self._presence.joined(self.room.id, self.user)
        self._counted_present = True
        if self.closed:
            await self.close()
            return
        self.transport.send_text(protocol.presence_frame(users))

    async def close(self) -> None:
        """Leave the room's feed and presence; safe to call again, and during open()."""
        self.closed = True
        if self._joined:
            self._joined = False
            await self._fanout.leave(self.room.id, self)
        if self._counted_present:
            self._counted_present = False
            await self._presence.left(self.room.id, self.user)

    # -- fan-out side -----------------------------------------------------

    def deliver(self, seq: int | None, frame: str) -> None:
        if self.closed:
            return
        if seq is None:
            self.transport.send_text(frame)
        elif self._pending is not None:
            self._pending.append((seq, frame))
        elif seq > self.last_seq:
            self.last_seq = seq
            self.transport.send_text(frame)

    # -- client side ------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return once no frame from the client is being handled (for graceful shutdown)."""
        await self._idle.wait()

    async def receive(self, text: str | bytes) -> None:
        self._idle.clear()
        try:
            await self._receive(text)
        finally:
            self._idle.set()

    async def _receive(self, text: str | bytes) -> None:
        client_id: str | None = None
        try:
            frame = protocol.parse_client_frame(text)
            client_id = getattr(frame, "client_id", None)
            if isinstance(frame, protocol.SyncFrame):
                await self._send_history(frame.since)
            else:
                await self._send(frame)
        except protocol.ProtocolError as exc:
            self.transport.send_text(protocol.error_frame(exc.code, exc.message, exc.client_id))
        except TooLarge as exc:
            self.transport.send_text(protocol.error_frame(protocol.TOO_LARGE, exc.message, client_id))
        except ValidationError as exc:
            self.transport.send_text(protocol.error_frame(protocol.BAD_REQUEST, exc.message, client_id))
        except RateLimited as exc:
            self.transport.send_text(protocol.error_frame(protocol.RATE_LIMITED, str(exc), client_id))
        except Unavailable:
            log.warning("storage unavailable while serving %s in room %s", self.user.username, self.room.id)
            self.transport.send_text(protocol.error_frame(
                protocol.UNAVAILABLE, "the server cannot store messages right now; retry shortly", client_id))

    async def _send(self, frame: protocol.SendFrame) -> None:
        if not await self._session_still_live():
            self.transport.send_text(protocol.error_frame(
                protocol.FORBIDDEN, "your session has ended; sign in again", frame.client_id))
            self.transport.close(CLOSE_POLICY_VIOLATION, "session ended")
            return
        self._rate_limit.take()
        message, created = await self._messages.post(self.user, self.room, frame.client_id, frame.body)
        if not self.closed:
            self.transport.send_text(protocol.ack_frame(message))
        # Publish even if this socket closed meanwhile (the message is stored,
        # the room must see it), and even for a resend of a stored message:
        # the process that stored it may have died before publishing, and
        # receivers drop any seq they already delivered.
        await self._fanout.publish_message(message)

    async def _session_still_live(self) -> bool:
        now = time.monotonic()
        if now - self._session_checked_at < self._session_recheck:
            return True
        live = await self._accounts.is_live(self._session_token)
        if live:
            self._session_checked_at = now
        return live

    async def _send_history(self, since: int | None) -> None:
        async with self._sync_lock:
            if self._pending is None:
                self._pending = []
            try:
                if since is None:
                    messages, has_more = await self._messages.recent(self.room.id)
                    self.transport.send_text(protocol.history_frame(messages, has_more))
                    if messages:
                        self.last_seq = max(self.last_seq, messages[-1].seq)
                else:
                    cursor = since
                    while True:
                        page, has_more = await self._messages.after(
                            self.room.id, cursor, protocol.HISTORY_PAGE_SIZE)
                        self.transport.send_text(protocol.history_frame(page, has_more))
                        if page:
                            cursor = page[-1].seq
                        if not has_more or self.closed:
                            break
                    self.last_seq = max(self.last_seq, cursor)
            finally:
                pending, self._pending = self._pending, None
                for seq, frame in pending:
                    self.deliver(seq, frame)
