"""What one WebSocket in one room does, independent of Tornado.

The Tornado handler owns the socket and forwards frames here; a
:class:`RoomConnection` owns the protocol: hello, ordered and duplicate-free
delivery of the room's messages, its frames read one at a time by a worker of
their own and handed to their ``on_<type>`` handlers (chat.wire.client
declares each), error frames. Its sends are :mod:`.sending`'s, its history
and resumption :mod:`.history`'s. :class:`Connections` is the one place that
makes them, and knows every one that is open in this process; admission to
the socket counts is :mod:`.admission`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ...errors import ChatError, RateLimited, SessionEnded, Unavailable
from ...models import Room, User
from ...wire.client import (
    DeleteFrame,
    EditFrame,
    FetchFrame,
    Per,
    ReadFrame,
    SendFrame,
    SyncFrame,
    TypingFrame,
    frame_type_of,
    parse_client_frame,
)
from ...wire.events import removed_user
from ...wire.refusals import Close, ErrorCode, ProtocolError, refusal_for
from ...wire.server import (
    Outbound,
    error_frame,
    error_frame_for,
    hello_frame,
    presence_frame,
    typing_frame,
)
from ..conversation.messages import Messages
from ..identity.accounts import Accounts, session_key
from ..limits import Limiter
from ..rooms.membership import Memberships
from ..rooms.moderation import Moderation
from ..rooms.unread import Unread
from .admission import Admission, SocketAdmissions
from .fanout import Fanout
from .history import HistoryReplay
from .presence import Presence
from .sending import SENDS_IN_FLIGHT, SendHold, SendPipeline

# Frames from one client that may wait for their turn; past it, reading the
# socket waits too (the rate limits keep honest clients far below it).
INBOX_FRAMES = 64
log = logging.getLogger(__name__)


class Transport(Protocol):
    def send_text(self, text: str) -> None:
        """Queue one text frame for this socket alone; never blocks."""

    def send_shared(self, frame: Outbound) -> None:
        """Queue a frame that many sockets are sent (built into bytes once); never blocks."""

    def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class ConnectionPolicy:
    """The per-socket rules, from settings."""

    instance: str
    # A socket re-checks its session before a send at most this often.
    session_recheck_seconds: float
    # From Settings, always (chat.bootstrap): no second default to drift from it.
    # A resume that would send more messages than this tells the client to
    # reload instead (``reset``), and no history frame exceeds the byte cap.
    resume_max_messages: int
    history_frame_max_bytes: int


@dataclass(eq=False)
class Connections:
    """The room sockets open in this process, the factory that makes them, and their admission."""

    messages: Messages
    memberships: Memberships
    moderation: Moderation
    unread: Unread
    accounts: Accounts
    fanout: Fanout
    presence: Presence
    limiter: Limiter
    admissions: SocketAdmissions
    policy: ConnectionPolicy
    clock: Callable[[], float] = time.monotonic
    _open: set[RoomConnection] = field(default_factory=set, init=False, repr=False)

    def create(
        self, transport: Transport, user: User, room: Room, session_token: str, admission: Admission | None = None
    ) -> RoomConnection:
        """A connection for a socket that passed the handshake; call ``open()`` on it next."""
        connection = RoomConnection(transport, user, room, session_token, self, admission)
        self._open.add(connection)
        return connection

    async def forget(self, connection: RoomConnection) -> None:
        self._open.discard(connection)
        if connection.admission is not None:
            await self.admissions.release(connection.admission)

    def session_keys(self) -> set[str]:
        return {connection.session_key for connection in self._open}

    def end_sessions(self, keys: Collection[str]) -> int:
        """Close, with "session ended", every socket of these sessions. Returns how many."""
        ending = [c for c in self._open if c.session_key in keys]
        for connection in ending:
            connection.end_session()
        return len(ending)

    def member_removed(self, room_id: str, event: str) -> None:
        """A ``member_removed`` control event: close that user's sockets in the room, here."""
        user_id = removed_user(event)
        for connection in [c for c in self._open if c.room.id == room_id and c.user.id == user_id]:
            connection.removed()

    async def recheck_access(self) -> int:
        """Close the sockets of people who may no longer read their room; returns how many.

        The broker's ``member_removed`` closes them at once; this catches a
        removal or ban whose announcement was lost (a broker outage), run
        with the periodic session re-check (chat.services.realtime.revocation).
        """
        open_now = [c for c in self._open if not c.closed]
        if not open_now:
            return 0
        readable = await self.memberships.readable({(c.room.id, c.user.id) for c in open_now})
        cut = [c for c in open_now if (c.room.id, c.user.id) not in readable]
        for connection in cut:
            connection.removed()
        return len(cut)

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


class RoomConnection(SendPipeline, HistoryReplay):
    def __init__(
        self,
        transport: Transport,
        user: User,
        room: Room,
        session_token: str,
        hub: Connections,
        admission: Admission | None = None,
    ) -> None:
        self.transport = transport
        self.user = user
        self.room = room
        self.admission = admission
        self._session_token = session_token
        self.session_key = session_key(session_token)
        self._hub = hub
        # Names this socket in its own rate limits (syncs per socket).
        self._id = uuid.uuid4().hex
        self._session_checked_at = hub.clock()
        # The highest seq this client has been sent; live frames at or below
        # it are duplicates of history it already has.
        self.last_seq = 0
        # While history is being sent, live frames wait here so the client
        # sees one ordered stream.
        self._pending: list[tuple[int | None, Outbound]] | None = None
        self._sync_lock = asyncio.Lock()
        self._joined = False
        self._counted_present = False
        self.closed = False
        # Frames from the client wait here and are handled one at a time, in
        # order, by a worker of their own: the socket keeps being read while
        # a send waits for storage, so a pong is seen at once, not after the
        # frames queued before it (a slow database used to look like a dead
        # client: "ping timed out").
        # Both made on the first frame: most sockets in a big room only read,
        # and a queue costs three deques (about 2 KiB) per socket.
        self._inbox: asyncio.Queue[str | bytes] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Whether the worker is handling a frame now (else it waits for one).
        self._handling = False
        # Sends handed to storage, each finishing (ack, publish) on its own:
        # a client's next message does not wait for the last one's round
        # trip, and storage keeps their order (Messages.submit).
        self._sends_in_flight = asyncio.Semaphore(SENDS_IN_FLIGHT)
        self._completions: set[asyncio.Task[None]] = set()
        self._hold: SendHold | None = None
        # Known to be a member of the room (checked or made so on the first send).
        self._member = False
        # The highest read marker this socket has set.
        self._read_seq = 0
        # A reset was sent: the client reloads, so nothing more about history is.
        self._reset_sent = False
        # Frames queued or being handled; idle (for graceful shutdown) at 0.
        self._busy = 0
        self._idle: asyncio.Future[None] | None = None  # made by wait_idle() only

    # -- lifecycle --------------------------------------------------------

    async def open(self, since: int | None, rev: int | None = None) -> None:
        """Greet the client, join the room's feed and send history (and the revisions after ``rev``)."""
        hub = self._hub
        self._pending = []
        await hub.fanout.join(self.room.id, self)
        self._joined = True
        if self.closed:  # the client left while we were joining: undo it
            await self.close()
            return
        # What the feed has delivered: everything after it reaches this
        # socket live, so history need only go up to here.
        recent = hub.fanout.recent(self.room.id)
        last_seq = recent.last_seq if recent is not None else await hub.messages.stored_seq(self.room.id)
        self.transport.send_text(hello_frame(self.room, self.user, hub.policy.instance, last_seq))
        await self._send_history(since, rev)
        users = await hub.presence.joined(self.room.id, self.user)
        self._counted_present = True
        if self.closed:
            await self.close()
            return
        self.transport.send_text(presence_frame(users))

    async def close(self) -> None:
        """Leave the room's feed and presence; safe to call again, and during open().

        A frame being handled finishes (a send being stored completes and is
        published); frames still queued are dropped: the client re-sends what
        was not acknowledged.
        """
        if not self.closed:
            self.closed = True
            self._drop_queued()
            await self._hub.forget(self)
        if self._joined:
            self._joined = False
            await self._hub.fanout.leave(self.room.id, self)
        if self._counted_present:
            self._counted_present = False
            await self._hub.presence.left(self.room.id, self.user)

    # -- fan-out side -----------------------------------------------------

    def deliver(self, seq: int | None, frame: Outbound) -> None:
        if self.closed:
            return
        if frame.author is not None and frame.author == self.user.id:
            return  # a notice about this socket's own user (typing): not for them
        if self._pending is not None:
            # Even frames without a seq (presence) wait: hello and history come first.
            self._pending.append((seq, frame))
        elif seq is None:
            self.transport.send_shared(frame)
        elif seq > self.last_seq:
            self.last_seq = seq
            self.transport.send_shared(frame)

    # -- client side ------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return once no frame from the client is queued or being handled (for graceful shutdown)."""
        while self._busy:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    async def submit(self, text: str | bytes) -> None:
        """Queue a frame from the client for its turn; waits only while INBOX_FRAMES are queued."""
        if self.closed:
            return
        if self._inbox is None:
            self._inbox = asyncio.Queue(maxsize=INBOX_FRAMES)
            self._worker = asyncio.create_task(self._handle_frames(self._inbox), name=f"frames-{self._id}")
        self._started()
        try:
            await self._inbox.put(text)
        except BaseException:
            self._finished()  # never queued (the handler's coroutine was cancelled while it waited)
            raise
        if self.closed:
            # Closed while this waited for room in the inbox: nobody will read it.
            self._drop_queued()

    async def _handle_frames(self, inbox: asyncio.Queue[str | bytes]) -> None:
        while not self.closed:
            text = await inbox.get()
            self._handling = True
            try:
                await self._receive(text)
            except Exception:
                # A bug, not the client's fault: say so with the documented
                # 1011 rather than leave the socket with nobody reading it.
                log.exception("closing socket: a frame from %s in room %s failed", self.user.username, self.room.id)
                self.transport.close(Close.INTERNAL_ERROR, "internal error; reconnect shortly")
            finally:
                self._handling = False
                self._finished()

    def _started(self) -> None:
        self._busy += 1

    def _finished(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._idle is not None:
            if not self._idle.done():
                self._idle.set_result(None)
            self._idle = None

    def _drop_queued(self) -> None:
        while self._inbox is not None and not self._inbox.empty():
            self._inbox.get_nowait()
            self._finished()
        if self._worker is not None and not self._handling:
            # Waiting for a frame that will never come. Not judged by _busy,
            # which also counts a submit still waiting for room in the inbox:
            # a worker left waiting was collected while pending, and its
            # socket's shutdown waited out the grace.
            self._worker.cancel()

    def removed(self) -> None:
        """The user left this room, or was removed or banned: say so and close for good."""
        if not self.closed:
            self.transport.send_text(error_frame(ErrorCode.FORBIDDEN, "You are no longer a member of this room."))
            self.transport.close(Close.REMOVED, "no longer a member")

    def end_session(self) -> None:
        """The session behind this socket ended (signed out, expired, revoked): say so and close."""
        self._refuse(SessionEnded("your session has ended; sign in again"), None)

    async def _receive(self, text: str | bytes) -> None:
        """Read one frame, count its limits and hand it to its handler (chat.wire.client declares each)."""
        client_id: str | None = None
        try:
            frame = parse_client_frame(text)
            frame_type = frame_type_of(frame)
            if frame_type.answers_with_client_id:
                client_id = getattr(frame, "client_id", None)
            for limit in frame_type.limits:
                try:
                    await self._hub.limiter.take(limit.action, self._id if limit.per is Per.SOCKET else self.user.id)
                except RateLimited:
                    if frame_type.dropped_over_limits:
                        return  # counted and logged as any refusal, but not answered
                    raise
            await getattr(self, frame_type.handler)(frame)
        except ChatError as exc:
            self._refuse(exc, client_id)

    # -- one handler per client frame type (on_<type>) ------------------------

    async def on_sync(self, frame: SyncFrame) -> None:
        if await self._still_readable():
            await self._send_history(frame.since, frame.rev)

    async def on_fetch(self, frame: FetchFrame) -> None:
        if await self._still_readable():
            await self._send_older(frame)

    async def on_read(self, frame: ReadFrame) -> None:
        await self._mark_read(frame.seq)

    async def on_edit(self, frame: EditFrame) -> None:
        await self._revise(frame)

    async def on_delete(self, frame: DeleteFrame) -> None:
        await self._revise(frame)

    async def on_typing(self, frame: TypingFrame) -> None:
        await self._hub.fanout.publish_ephemeral(self.room.id, typing_frame(self.user))

    async def on_send(self, frame: SendFrame) -> None:
        await self._send(frame)

    async def _mark_read(self, seq: int) -> None:
        """Move the reader's marker: never past what this socket was sent, never back, never twice."""
        seq = min(seq, self.last_seq)
        if seq <= self._read_seq:
            return
        self._read_seq = seq
        await self._hub.unread.mark_read(self.user, self.room, seq)

    def _refuse(self, exc: ChatError, client_id: str | None) -> None:
        refusal = refusal_for(exc)
        if refusal is None:
            raise exc  # not an error we raise on purpose: a bug, logged by Tornado
        if isinstance(exc, ProtocolError):
            client_id = exc.client_id
        if isinstance(exc, Unavailable):
            log.warning("storage unavailable while serving %s in room %s: %s", self.user.username, self.room.id, exc)
        self.transport.send_text(error_frame_for(exc, refusal, client_id))
        if isinstance(exc, SessionEnded):
            self.transport.close(Close.SESSION_ENDED, "session ended")

    async def _still_allowed(self) -> bool:
        """Before acting for the client: is its session live, and the room still its to read?

        Asked at most every ``session_recheck_seconds`` (between two asks the
        broker's announcements and the periodic re-check close the socket).
        Raises SessionEnded; a room no longer readable closes the socket
        (``removed``) and returns False.
        """
        now = self._hub.clock()
        if now - self._session_checked_at < self._hub.policy.session_recheck_seconds:
            return True
        if not await self._hub.accounts.is_live(self._session_token):
            raise SessionEnded("your session has ended; sign in again")
        if not await self._still_readable():
            return False
        self._session_checked_at = now
        return True

    async def _still_readable(self) -> bool:
        """Whether the user may still read the room (else the socket is closed as removed).

        Asked before every history read (a removed member's scroll-back must
        not outlive a lost announcement) and with the session before sends.
        """
        pair = (self.room.id, self.user.id)
        if pair in await self._hub.memberships.readable([pair]):
            return True
        self.removed()
        return False
