"""One person's event stream: the live badges of their sidebar, on every page they have open.

The stream (``/events/ws``) sends the person's rooms with their counts when
it opens (``badges``), then small events, never message bodies:

* ``activity``: a message was stored in one of their rooms (its seq, whether
  it was theirs, whether it mentions them: read from the message's author and
  rendered mentions, never from the text a sender typed);
* ``read``: their marker moved, in this tab or another, on any process;
* ``badges`` again when the rooms they belong to change.

A stream listens to its rooms' feeds the way a room socket does (one
subscription per room per process, however many listen), and to the
person's own broker channel, shared by all their streams in the process.

A stream belongs to the session that opened it, as a room socket does: when
the session ends (signed out, signed out elsewhere, a new password, a
disabled account, the idle or absolute timeout) the stream is closed like
the session's room sockets (chat.services.realtime.revocation), and it re-reads its
rooms only while the session is live, so a copied cookie's stream never
learns a room the person joins afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection

from ...broker import user_channel
from ...errors import Unavailable
from ...models import User
from ...wire.refusals import Close, ErrorCode
from ...wire.server import Outbound, activity_frame, badges_frame, error_frame, message_facts
from ..identity.accounts import Accounts, session_key
from ..rooms.membership import Memberships
from ..rooms.unread import Unread
from .connection import Transport
from .fanout import Fanout

log = logging.getLogger(__name__)


class _RoomWatch:
    """A stream's listener in one room's feed."""

    __slots__ = ("room_id", "stream")

    def __init__(self, stream: UserStream, room_id: str) -> None:
        self.stream = stream
        self.room_id = room_id

    def deliver(self, seq: int | None, frame: Outbound) -> None:
        if seq is not None:  # a stored message; typing, presence and edits are the room page's business
            self.stream.activity(self.room_id, seq, frame)


class UserStream:
    def __init__(self, transport: Transport, user: User, session_token: str, hub: UserStreams) -> None:
        self.transport = transport
        self.user = user
        self.session_key = session_key(session_token)
        self._hub = hub
        self._watching: dict[str, _RoomWatch] = {}
        self._syncing: asyncio.Task[None] | None = None
        self.closed = False
        # The session ended: nothing more is sent while the socket closes.
        self.ended = False

    async def open(self) -> None:
        await self._hub.register(self)
        await self.sync()

    @property
    def silent(self) -> bool:
        return self.closed or self.ended

    def rooms(self) -> list[str]:
        """The rooms this stream follows."""
        return list(self._watching)

    async def sync(self, check_session: bool = False) -> None:
        """Follow the rooms the person belongs to now, and send their badges.

        ``check_session``: first make sure the session is still live (a
        resync comes from an event, long after the handshake checked it).
        """
        if check_session and not await self._hub.accounts.live_sessions({self.session_key}):
            self.end_session()
            return
        badges = await self._hub.unread.badges(self.user)
        wanted = {badge.room.id for badge in badges}
        for room_id in wanted - self._watching.keys():
            watch = _RoomWatch(self, room_id)
            await self._hub.fanout.join(room_id, watch)
            self._watching[room_id] = watch
        for room_id in self._watching.keys() - wanted:
            await self._hub.fanout.leave(room_id, self._watching.pop(room_id))
        if not self.silent:
            self.transport.send_text(badges_frame([badge.to_wire() for badge in badges]))

    def end_session(self) -> None:
        """The session behind this stream ended: say so and close (the page does not reconnect)."""
        if self.silent:
            return
        self.ended = True
        self.transport.send_text(error_frame(ErrorCode.FORBIDDEN, "your session has ended; sign in again"))
        self.transport.close(Close.SESSION_ENDED, "session ended")

    def activity(self, room_id: str, seq: int, frame: Outbound) -> None:
        if self.silent:
            return
        try:
            facts = message_facts(frame)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping the activity of a malformed message frame in room %s", room_id)
            return
        self.transport.send_text(
            activity_frame(room_id, seq, mine=facts.author == self.user.id, mention=self.user.id in facts.mentioned)
        )

    def heard(self, event: str) -> None:
        """An event on the person's channel: a marker moved (pass it on) or their rooms changed (sync)."""
        if self.silent:
            return
        try:
            kind = json.loads(event).get("type")
        except (ValueError, AttributeError):
            log.warning("dropping a malformed user event")
            return
        if kind == "read":
            self.transport.send_text(event)
        elif kind == "rooms_changed":
            self.resync()

    def resync(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync_safely())

    async def _sync_safely(self) -> None:
        try:
            await self.sync(check_session=True)
        except Unavailable as exc:
            log.warning("refreshing the badges of %s failed: %s", self.user.username, exc)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._syncing is not None:
            self._syncing.cancel()
        for room_id, watch in list(self._watching.items()):
            await self._hub.fanout.leave(room_id, watch)
        self._watching.clear()
        await self._hub.unregister(self)


class UserStreams:
    """The streams open in this process, by person, and their shared channel subscriptions."""

    def __init__(self, fanout: Fanout, unread: Unread, accounts: Accounts, memberships: Memberships) -> None:
        self.fanout = fanout
        self.unread = unread
        self.accounts = accounts
        self.memberships = memberships
        self._by_user: dict[str, set[UserStream]] = {}

    def create(self, transport: Transport, user: User, session_token: str) -> UserStream:
        return UserStream(transport, user, session_token, self)

    def _streams(self) -> list[UserStream]:
        return [stream for streams in self._by_user.values() for stream in streams]

    def session_keys(self) -> set[str]:
        return {stream.session_key for stream in self._streams() if not stream.silent}

    def end_sessions(self, keys: Collection[str]) -> int:
        """Close, with "session ended", every stream of these sessions. Returns how many."""
        ending = [stream for stream in self._streams() if stream.session_key in keys and not stream.silent]
        for stream in ending:
            stream.end_session()
        return len(ending)

    async def recheck_access(self) -> int:
        """Stop following rooms the person may no longer read (a removal whose announcement was lost).

        Returns how many streams were refreshed.
        """
        following = {(room_id, stream.user.id): stream for stream in self._streams() for room_id in stream.rooms()}
        if not following:
            return 0
        readable = await self.memberships.readable(following.keys())
        stale = {stream for pair, stream in following.items() if pair not in readable and not stream.silent}
        for stream in stale:
            stream.resync()
        return len(stale)

    async def register(self, stream: UserStream) -> None:
        streams = self._by_user.setdefault(stream.user.id, set())
        streams.add(stream)
        if len(streams) == 1:
            user_id = stream.user.id
            await self.fanout.watch(
                user_channel(user_id), self._heard_for(user_id), on_resync=self._resync_for(user_id)
            )

    async def unregister(self, stream: UserStream) -> None:
        streams = self._by_user.get(stream.user.id)
        if streams is None:
            return
        streams.discard(stream)
        if not streams:
            del self._by_user[stream.user.id]
            await self.fanout.unwatch(user_channel(stream.user.id))

    def _heard_for(self, user_id: str) -> Callable[[str], None]:
        def heard(event: str) -> None:
            for stream in tuple(self._by_user.get(user_id, ())):
                stream.heard(event)

        return heard

    def _resync_for(self, user_id: str) -> Callable[[], None]:
        # The broker lost its subscriptions for a while: markers may have moved unheard.
        def resync() -> None:
            for stream in tuple(self._by_user.get(user_id, ())):
                stream.resync()

        return resync

    def __len__(self) -> int:
        return sum(len(streams) for streams in self._by_user.values())
