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
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ... import metrics
from ...broker import LeaseStore
from ...errors import ChatError, Forbidden, RateLimited, SessionEnded, Unavailable
from ...models import Message, Room, User
from ...wire.actions import Action
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
    HISTORY_PAGE_SIZE,
    UPDATES_MAX,
    Outbound,
    ack_frame,
    error_frame,
    error_frame_for,
    hello_frame,
    history_frame,
    history_frame_of,
    history_frames,
    history_frames_of,
    history_reset_frame,
    older_history_frame,
    presence_frame,
    typing_frame,
    updates_frame,
)
from .. import audit
from ..conversation.messages import Messages
from ..identity.accounts import Accounts, session_key
from ..limits import Limiter
from ..rooms.membership import Memberships
from ..rooms.moderation import Moderation
from ..rooms.unread import Unread
from .fanout import Fanout
from .feed import Recent
from .presence import Presence

# How long a client refused for holding too many sockets should wait.
TOO_MANY_SOCKETS_RETRY_AFTER = 5.0
# Frames from one client that may wait for their turn; past it, reading the
# socket waits too (the rate limits keep honest clients far below it).
INBOX_FRAMES = 64
# Sends of one socket handed to storage and not yet acked; the next send
# waits for one of them (it is still read meanwhile: see INBOX_FRAMES).
SENDS_IN_FLIGHT = 16
# A send refused for a while (rate limited, storage busy) holds back the ones
# sent after it on the same socket until it is sent again, or until this long
# after the client was told it may retry (a client that gave up on it).
SEND_HOLD_GRACE_SECONDS = 10.0

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
    max_sockets_per_user: int
    max_sockets_per_ip: int
    # A resume that would send more messages than this tells the client to
    # reload instead (``reset``), and no history frame exceeds the byte cap.
    resume_max_messages: int
    history_frame_max_bytes: int
    # A socket's places in the socket counts expire this long after the last
    # heartbeat (every third of it), so a crashed process's sockets stop
    # counting soon: its users reconnect elsewhere at once.
    lease_seconds: float = 30.0


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


@dataclass(frozen=True)
class Admission:
    """The places one socket holds in the per-user and per-address counts."""

    holder: str
    pools: tuple[str, ...]


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
    leases: LeaseStore
    policy: ConnectionPolicy
    clock: Callable[[], float] = time.monotonic
    _open: set[RoomConnection] = field(default_factory=set, init=False, repr=False)
    _admitted: dict[str, Admission] = field(default_factory=dict, init=False, repr=False)

    async def admit(self, user: User, client_ip: str) -> Admission:
        """Count one more socket of ``user`` from ``client_ip``, or raise RateLimited.

        Called during the handshake, before the upgrade, so a refusal is a
        plain 429. Also limits how often a user opens sockets at all.
        """
        await self.limiter.take(Action.HANDSHAKE, user.id)
        holder = f"{self.policy.instance}:{uuid.uuid4().hex}"
        wanted = (
            (f"user:{user.id}", self.policy.max_sockets_per_user),
            (f"ip:{self.limiter.address(client_ip)}", self.policy.max_sockets_per_ip),
        )
        taken: list[str] = []
        for pool, limit in wanted:
            try:
                granted = await self.leases.acquire(pool, holder, limit, self.policy.lease_seconds)
            except Unavailable as exc:
                # Fail open: refusing every socket while Redis restarts would
                # be worse than a minute without this limit.
                log.warning("socket limits unavailable (%s); admitting", exc)
                granted = True
            if not granted:
                await self.release(Admission(holder, tuple(taken)))
                reason = f"too many sockets ({pool.split(':')[0]})"
                audit.throttled("socket_refused", user.id, client_ip, user=user.id, ip=client_ip, reason=reason)
                metrics.LIMIT_REFUSALS.labels(f"sockets_per_{pool.split(':')[0]}").inc()
                raise RateLimited(TOO_MANY_SOCKETS_RETRY_AFTER)
            taken.append(pool)
        admission = Admission(holder, tuple(taken))
        self._admitted[holder] = admission
        return admission

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
            await self.release(connection.admission)

    async def release(self, admission: Admission) -> None:
        self._admitted.pop(admission.holder, None)
        for pool in admission.pools:
            try:
                await self.leases.release(pool, admission.holder)
            except Unavailable as exc:
                log.warning("could not release a socket place (%s); it expires by itself", exc)

    async def release_all(self) -> None:
        """Give back every place this process holds (shutting down: its sockets are gone)."""
        for admission in list(self._admitted.values()):
            await self.release(admission)

    async def renew_leases(self) -> None:
        """Heartbeat for the places this process's sockets hold."""
        leases = [(pool, a.holder) for a in self._admitted.values() for pool in a.pools]
        if leases:
            await self.leases.renew(leases, self.policy.lease_seconds)

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


class RoomConnection:
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
        await self._inbox.put(text)

    async def receive(self, text: str | bytes) -> None:
        """Handle one frame now, through to its ack (the worker's job; tests call it directly)."""
        self._started()
        try:
            await self._receive(text)
            await asyncio.gather(*self._completions)
        finally:
            self._finished()

    async def _handle_frames(self, inbox: asyncio.Queue[str | bytes]) -> None:
        while not self.closed:
            text = await inbox.get()
            try:
                await self._receive(text)
            except Exception:
                # A bug, not the client's fault: say so with the documented
                # 1011 rather than leave the socket with nobody reading it.
                log.exception("closing socket: a frame from %s in room %s failed", self.user.username, self.room.id)
                self.transport.close(Close.INTERNAL_ERROR, "internal error; reconnect shortly")
            finally:
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
        if self._worker is not None and self._busy == 0:
            self._worker.cancel()  # waiting for a frame that will never come

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
                await self._hub.limiter.take(limit.action, self._id if limit.per is Per.SOCKET else self.user.id)
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

    async def _mark_read(self, seq: int) -> None:
        """Move the reader's marker: never past what this socket was sent, never back, never twice."""
        seq = min(seq, self.last_seq)
        if seq <= self._read_seq:
            return
        self._read_seq = seq
        await self._hub.unread.mark_read(self.user, self.room, seq)

    async def _send_older(self, frame: FetchFrame) -> None:
        """Scroll-back: the messages just before ``frame.before``, never past what this socket was sent."""
        before = min(frame.before, self.last_seq + 1)
        messages, has_more = await self._hub.messages.before(self.room.id, before, frame.limit)
        self.transport.send_text(older_history_frame(messages, has_more, before))

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

    async def _send_history(self, since: int | None, rev: int | None = None) -> None:
        """History after ``since`` (the latest page without it), then the revisions after ``rev``.

        From what the room's feed remembers when it can (no database read),
        else from storage. Either way up to at least the feed's last seq, and
        live frames that arrive meanwhile wait, so the client sees one
        ordered stream.
        """
        async with self._sync_lock:
            if self._pending is None:
                self._pending = []
            self._reset_sent = False
            try:
                recent = self._hub.fanout.recent(self.room.id)
                if since is None:
                    await self._send_recent(recent)
                else:
                    await self._send_after(since, recent)
                if rev is not None and not self._reset_sent:
                    await self._send_revisions(rev)
            finally:
                pending, self._pending = self._pending, None
                for seq, frame in pending:
                    self.deliver(seq, frame)

    async def _send_recent(self, recent: Recent | None) -> None:
        hub = self._hub
        latest = recent.latest(hub.messages.history_limit) if recent is not None else None
        if latest is not None:
            wires, has_more = latest
            self.transport.send_text(history_frame_of(wires, has_more))
            self.last_seq = max(self.last_seq, recent.last_seq if recent is not None else 0)
            return
        messages, has_more = await hub.messages.recent(self.room.id)
        hub.fanout.remember_read(self.room.id, messages)
        self.transport.send_text(history_frame(messages, has_more))
        if messages:
            self.last_seq = max(self.last_seq, messages[-1].seq)

    async def _send_after(self, since: int, recent: Recent | None) -> None:
        hub = self._hub
        policy = hub.policy
        if recent is not None and since <= recent.last_seq:
            if recent.last_seq - since > policy.resume_max_messages:
                self._send_reset(recent.last_seq)
                return
            wires = recent.after(since)
            if wires is not None:
                for frame in history_frames_of(wires, False, policy.history_frame_max_bytes):
                    self.transport.send_text(frame)
                self.last_seq = max(self.last_seq, recent.last_seq)
                return
        stored = await hub.messages.stored_seq(self.room.id)
        if stored - since > policy.resume_max_messages or since > stored:
            # Too far behind to catch up frame by frame (seqs have no holes,
            # so this is how many it missed), or ahead of storage (history was
            # restored from an older backup): the client reloads the page,
            # which renders the latest messages, instead.
            self._send_reset(stored)
            return
        cursor = since
        while True:
            page, has_more = await hub.messages.after(self.room.id, cursor, HISTORY_PAGE_SIZE)
            for frame in history_frames(page, has_more, policy.history_frame_max_bytes):
                self.transport.send_text(frame)
            if page:
                cursor = page[-1].seq
            if not has_more or self.closed:
                hub.fanout.remember_read(self.room.id, page)
                break
        self.last_seq = max(self.last_seq, cursor)

    async def _send_revisions(self, rev: int) -> None:
        """The messages revised after ``rev``, in one ``updates`` frame, with the rev to resume from next.

        Every revision up to the feed's rev_known was stored before the feed
        saw it, so storage has it now; any later one reaches this socket live
        (it has joined the feed). So when the client is not behind the feed,
        storage need not be asked.
        """
        known = self._hub.fanout.rev_known(self.room.id)
        if known is not None and rev >= known:
            self.transport.send_text(updates_frame([], rev))
            return
        revised, more = await self._hub.messages.revised_after(self.room.id, rev, UPDATES_MAX)
        if more:
            self._send_reset(self.last_seq)  # too many to send one by one: reload
            return
        last_rev = max([known or 0, rev, *(m.rev for m in revised)])
        self.transport.send_text(updates_frame(revised, last_rev))

    def _send_reset(self, stored: int) -> None:
        self._reset_sent = True
        self.transport.send_text(history_reset_frame())
        self.last_seq = max(self.last_seq, stored)
