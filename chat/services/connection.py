"""What one WebSocket in one room does, independent of Tornado.

The Tornado handler owns the socket and forwards frames here; a
:class:`RoomConnection` owns the protocol: hello, history and resumption,
sends with acks, rate limits and error frames, and ordered, duplicate-free
delivery of the room's messages. :class:`Connections` is the one place that
makes them, and knows every one that is open in this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .. import protocol
from ..errors import ChatError, SessionEnded, Unavailable
from ..models import Room, User
from ..protocol import Close
from .accounts import Accounts
from .fanout import Fanout
from .messages import Messages
from .presence import Presence
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)


class Transport(Protocol):
    def send_text(self, text: str) -> None:
        """Queue one text frame; never blocks."""

    def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class ConnectionPolicy:
    """The per-socket rules, from settings."""

    instance: str
    rate_limit_burst: int
    rate_limit_per_second: float
    # A socket re-checks its session at most this often.
    session_recheck_seconds: float


@dataclass(eq=False)
class Connections:
    """The room sockets open in this process, and the factory that makes them."""

    messages: Messages
    accounts: Accounts
    fanout: Fanout
    presence: Presence
    policy: ConnectionPolicy
    clock: Callable[[], float] = time.monotonic
    _open: set[RoomConnection] = field(default_factory=set, init=False, repr=False)

    def create(self, transport: Transport, user: User, room: Room, session_token: str) -> RoomConnection:
        """A connection for a socket that passed the handshake; call ``open()`` on it next."""
        connection = RoomConnection(transport, user, room, session_token, self)
        self._open.add(connection)
        return connection

    def forget(self, connection: RoomConnection) -> None:
        self._open.discard(connection)

    def __iter__(self) -> Iterator[RoomConnection]:
        return iter(tuple(self._open))

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, code: Close, reason: str, grace: float) -> bool:
        """Close every socket, then wait up to ``grace`` seconds for frames being handled.

        Returns False if some were still busy (e.g. a send being stored) when
        time ran out.
        """
        closing = list(self._open)
        for connection in closing:
            connection.transport.close(code, reason)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.wait_idle() for c in closing)), grace)
        except TimeoutError:
            return False
        return True


class RoomConnection:
    def __init__(self, transport: Transport, user: User, room: Room, session_token: str, hub: Connections) -> None:
        self.transport = transport
        self.user = user
        self.room = room
        self._session_token = session_token
        self._hub = hub
        self._rate_limit = TokenBucket(hub.policy.rate_limit_burst, hub.policy.rate_limit_per_second, clock=hub.clock)
        self._session_checked_at = hub.clock()
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
        hub = self._hub
        self._pending = []
        await hub.fanout.join(self.room.id, self)
        self._joined = True
        if self.closed:  # the client left while we were joining: undo it
            await self.close()
            return
        last_seq = await hub.messages.stored_seq(self.room.id)
        self.transport.send_text(protocol.hello_frame(self.room, self.user, hub.policy.instance, last_seq))
        await self._send_history(since)
        users = await hub.presence.joined(self.room.id, self.user)
        self._counted_present = True
        if self.closed:
            await self.close()
            return
        self.transport.send_text(protocol.presence_frame(users))

    async def close(self) -> None:
        """Leave the room's feed and presence; safe to call again, and during open()."""
        self.closed = True
        self._hub.forget(self)
        if self._joined:
            self._joined = False
            await self._hub.fanout.leave(self.room.id, self)
        if self._counted_present:
            self._counted_present = False
            await self._hub.presence.left(self.room.id, self.user)

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
            if isinstance(frame, protocol.SyncFrame):
                await self._send_history(frame.since)
            else:
                client_id = frame.client_id
                await self._send(frame)
        except ChatError as exc:
            self._refuse(exc, client_id)

    def _refuse(self, exc: ChatError, client_id: str | None) -> None:
        refusal = protocol.refusal_for(exc)
        if refusal is None:
            raise exc  # not an error we raise on purpose: a bug, logged by Tornado
        if isinstance(exc, protocol.ProtocolError):
            client_id = exc.client_id
        if isinstance(exc, Unavailable):
            log.warning("storage unavailable while serving %s in room %s: %s", self.user.username, self.room.id, exc)
        self.transport.send_text(protocol.error_frame_for(exc, refusal, client_id))
        if isinstance(exc, SessionEnded):
            self.transport.close(Close.SESSION_ENDED, "session ended")

    async def _send(self, frame: protocol.SendFrame) -> None:
        if not await self._session_still_live():
            raise SessionEnded("your session has ended; sign in again")
        self._rate_limit.take()
        message, _ = await self._hub.messages.post(self.user, self.room, frame.client_id, frame.body)
        if not self.closed:
            self.transport.send_text(protocol.ack_frame(message))
        # Publish even if this socket closed meanwhile (the message is stored,
        # the room must see it), and even for a resend of a stored message:
        # the process that stored it may have died before publishing, and
        # receivers drop any seq they already delivered.
        await self._hub.fanout.publish_message(message)

    async def _session_still_live(self) -> bool:
        now = self._hub.clock()
        if now - self._session_checked_at < self._hub.policy.session_recheck_seconds:
            return True
        live = await self._hub.accounts.is_live(self._session_token)
        if live:
            self._session_checked_at = now
        return live

    async def _send_history(self, since: int | None) -> None:
        async with self._sync_lock:
            if self._pending is None:
                self._pending = []
            try:
                if since is None:
                    await self._send_recent()
                else:
                    await self._send_after(since)
            finally:
                pending, self._pending = self._pending, None
                for seq, frame in pending:
                    self.deliver(seq, frame)

    async def _send_recent(self) -> None:
        messages, has_more = await self._hub.messages.recent(self.room.id)
        self.transport.send_text(protocol.history_frame(messages, has_more))
        if messages:
            self.last_seq = max(self.last_seq, messages[-1].seq)

    async def _send_after(self, since: int) -> None:
        cursor = since
        while True:
            page, has_more = await self._hub.messages.after(self.room.id, cursor, protocol.HISTORY_PAGE_SIZE)
            self.transport.send_text(protocol.history_frame(page, has_more))
            if page:
                cursor = page[-1].seq
            if not has_more or self.closed:
                break
        self.last_seq = max(self.last_seq, cursor)
