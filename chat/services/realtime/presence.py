"""Presence: who is online in a room, whichever process their socket is on.

Each process counts its own sockets per (room, user) and records the users in
the shared :class:`~chat.broker.presence.PresenceStore`. When the set changes,
it publishes a small control event on the room's channel; every process then
re-reads the room's presence and, if what its sockets were last shown differs,
delivers a ``presence`` frame to them. A heartbeat keeps this process's
entries alive and re-reads every local room, which is also how users of a
process that died without saying goodbye disappear (their entries expire).

Changes are coalesced: a process re-reads a room at most once per
``coalesce`` seconds (0.2) and sends its sockets one frame for whatever
changed meanwhile. Without it, a thousand people joining a room at once (a
restart behind nginx) would send every socket already there a list per
joiner, O(n^2) frames of O(n) users each. A newcomer is sent the list this
process read last (with itself in it) at once, without a read of its own.

Presence is best effort: if the store is unreachable, chat goes on and the
list catches up at the next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from ...broker import PresenceStore
from ...errors import Unavailable
from ...models import OnlineUser, User
from ...wire.events import PRESENCE_CHANGED, control_event
from ...wire.server import presence_frame
from ..batching import batched_reads
from .fanout import Fanout

log = logging.getLogger(__name__)

# Rooms re-read together at a heartbeat; the slices are spread over half of it.
HEARTBEAT_SLICE = 10


class Presence:
    def __init__(
        self,
        store: PresenceStore,
        fanout: Fanout,
        instance: str,
        *,
        ttl: float = 30.0,
        heartbeat: float = 10.0,
        coalesce: float = 0.2,
    ) -> None:
        self._store = store
        self._fanout = fanout
        self._instance = instance
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.coalesce = coalesce
        # room_id -> user_id -> (user, number of this process's sockets)
        self._local: dict[str, dict[str, tuple[OnlineUser, int]]] = {}
        # room_id -> the list this process's sockets were last sent
        self._shown: dict[str, list[OnlineUser]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._reading: dict[str, asyncio.Future[list[OnlineUser]]] = {}
        self._dirty: set[str] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Rooms re-read together go to the store together: a process that went
        # away tells each of its rooms at once, and a thousand reads at once
        # took a connection each.
        self._reads = batched_reads(lambda room_ids: self._store.online_in_each(room_ids), name="presence reads")
        # Set when the process is going away: sockets closing leave their
        # entries, which stop() then takes off all at once.
        self.going_away = False

    async def start(self) -> None:
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def stop(self) -> None:
        tasks = [t for t in (self._heartbeat_task, *self._refreshing.values()) if t is not None]
        self._heartbeat_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Say goodbye so others do not wait for our entries to expire: every
        # entry in a few round trips, then each room's processes are told.
        local, self._local = self._local, {}
        entries = [(room_id, user) for room_id, users in local.items() for user, _ in users.values()]
        try:
            await self._store.remove_many(self._instance, entries)
            await self._fanout.publish_control_to_each(list(local), control_event(PRESENCE_CHANGED))
        except Unavailable as exc:
            log.warning("could not take this process's users off the rooms (%s); they expire by themselves", exc)

    async def online(self, room_id: str) -> list[OnlineUser]:
        """Everyone online in the room; empty if the store cannot be reached."""
        try:
            return await self._store.online(room_id)
        except Unavailable as exc:
            log.warning("presence of room %s unavailable: %s", room_id, exc)
            return []

    async def joined(self, room_id: str, user: User) -> list[OnlineUser]:
        """Count one more local socket of ``user`` in the room; return who is online.

        Only the room's first local socket reads the store. Later ones are
        answered with the list this process read last (and themselves): the
        change they announce makes every process re-read once per
        ``coalesce`` seconds, which sends the newcomer the fresh list too. A
        thousand sockets joining at once cost a few reads, not a thousand
        reads of a thousand users.
        """
        online = OnlineUser(username=user.username, id=user.id)
        room = self._local.setdefault(room_id, {})
        _, count = room.get(user.id, (online, 0))
        room[user.id] = (online, count + 1)
        if count == 0:
            await self._announce(room_id, self._store.add(room_id, self._instance, online, self.ttl))
        shown = self._shown.get(room_id)
        if shown is None:
            shown = await self._first_read(room_id)
        if online in shown:
            return shown
        return sorted([*shown, online])

    async def _first_read(self, room_id: str) -> list[OnlineUser]:
        reading = self._reading.get(room_id)
        if reading is None:
            reading = self._reading[room_id] = asyncio.ensure_future(self._read_for_newcomers(room_id))
            reading.add_done_callback(lambda _: self._reading.pop(room_id, None))
        return await asyncio.shield(reading)

    async def _read_for_newcomers(self, room_id: str) -> list[OnlineUser]:
        try:
            users = await self._read(room_id)
        except Unavailable as exc:
            log.warning("presence of room %s unavailable: %s", room_id, exc)
            # The newcomer is shown itself alone; the next heartbeat finds the
            # real list different and sends it to every local socket.
            users = []
        if room_id in self._local:
            self._shown[room_id] = users
        return users

    async def left(self, room_id: str, user: User) -> None:
        if self.going_away:
            return  # stop() takes everyone off at once
        room = self._local.get(room_id, {})
        if user.id not in room:
            return
        online, count = room[user.id]
        if count > 1:
            room[user.id] = (online, count - 1)
            return
        del room[user.id]
        if not room:
            del self._local[room_id]
            self._shown.pop(room_id, None)
        await self._announce(room_id, self._store.remove(room_id, self._instance, online))

    async def _announce(self, room_id: str, change: Awaitable[None]) -> None:
        """Apply a change to the shared store, then tell every process to re-read."""
        try:
            await change
            await self._fanout.publish_control(room_id, control_event(PRESENCE_CHANGED))
        except Unavailable as exc:
            log.warning("presence update for room %s failed: %s", room_id, exc)

    async def _read(self, room_id: str) -> list[OnlineUser]:
        return await self._reads.outcome(room_id, room_id) or []

    def changed(self, room_id: str, event: str = "") -> None:
        """A process announced a change in the room: re-read it, coalescing bursts.

        The root wires this to the fan-out's ``presence_changed`` control events.
        """
        if room_id not in self._local:
            return
        if room_id in self._refreshing:
            self._dirty.add(room_id)
            return
        self._refreshing[room_id] = asyncio.create_task(self._refresh(room_id))

    async def _refresh(self, room_id: str) -> None:
        try:
            while True:
                # Let a burst of changes land, then read once for all of them.
                await asyncio.sleep(self.coalesce)
                self._dirty.discard(room_id)
                users = await self._read(room_id)
                if room_id in self._local and users != self._shown.get(room_id):
                    self._shown[room_id] = users
                    self._fanout.deliver_local(room_id, presence_frame(users))
                if room_id not in self._dirty:
                    return
        except Unavailable as exc:
            log.warning("presence refresh of room %s failed: %s", room_id, exc)
        except Exception:
            log.exception("presence refresh of room %s failed", room_id)
        finally:
            self._refreshing.pop(room_id, None)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat / 2)
            entries = [(room_id, user) for room_id, users in self._local.items() for user, _ in users.values()]
            try:
                if entries:
                    await self._store.refresh(self._instance, entries, self.ttl)
            except Unavailable as exc:
                log.warning("presence heartbeat failed: %s", exc)
            # The rooms are read again over the other half of the period, a
            # slice at a time: all at once, two hundred rooms' reads and
            # frames stalled every message of the process for a moment.
            rooms = list(self._local)
            slices = [rooms[start : start + HEARTBEAT_SLICE] for start in range(0, len(rooms), HEARTBEAT_SLICE)]
            for rooms_slice in slices:
                for room_id in rooms_slice:
                    self.changed(room_id)
                await asyncio.sleep(self.heartbeat / 2 / len(slices))
            if not slices:
                await asyncio.sleep(self.heartbeat / 2)
