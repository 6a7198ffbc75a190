"""Domain events: what the services say happened, and the one bus they say it on.

A service that changes state publishes an event here and goes on; it knows
nothing of who listens. Who reacts is wired once, in the composition root
(:func:`chat.bootstrap.build_services`): most events are relayed to the
sockets of every process (chat.services.realtime.relay), ended sessions
close sockets (chat.services.realtime.revocation). Each event has one owner,
the service that publishes it:

============================  ===========================================
event                         published by
============================  ===========================================
:class:`SessionsEnded`        identity: accounts (sign-out, a new password,
                              a disabled account, the admin CLI)
:class:`MemberRemoved`        rooms: membership (leave, remove, ban), and
                              the admin CLI deleting a room
:class:`RoomsChanged`         rooms: membership and catalog (joined, left,
                              invited, removed, a room made or deleted)
:class:`MembershipNotice`     rooms: membership
:class:`RoomChanged`          rooms: moderation (rename, topic) and the admin
                              CLI (archive, delete)
:class:`ReadMoved`            rooms: unread
============================  ===========================================

Messages and their revisions are not events of this bus: the socket that
stored one acknowledges it and publishes it to the room itself
(chat.services.realtime.connection), in that order, on the hot path.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import Unavailable
from .models import Room

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionsEnded:
    """These stored sessions ended: their sockets close, on every process."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class MemberRemoved:
    """The person may no longer read the room (left, removed, banned, the room deleted): their sockets there close."""

    room_id: str
    user_id: str


@dataclass(frozen=True)
class RoomsChanged:
    """The rooms a person belongs to changed: their sidebars reload the list."""

    user_id: str


@dataclass(frozen=True)
class MembershipNotice:
    """Someone joined, left, or was removed or banned: the room's sockets are told, in passing."""

    room_id: str
    change: str
    user_id: str
    username: str


@dataclass(frozen=True)
class RoomChanged:
    """The stored room changed: every process forgets its copy; with ``room``, its sockets see the new one."""

    room_id: str
    # Renamed or a new topic: what the room's sockets are shown (``room_updated``).
    room: Room | None = None


@dataclass(frozen=True)
class ReadMoved:
    """A person's read marker in a room moved: every page of theirs updates its badge."""

    user_id: str
    room_id: str
    read_seq: int
    mentions: int


DomainEvent = SessionsEnded | MemberRemoved | RoomsChanged | MembershipNotice | RoomChanged | ReadMoved
E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None]]


class EventBus:
    """Hands each published event to the handlers subscribed to its type, in the order they subscribed."""

    def __init__(self) -> None:
        self._handlers: defaultdict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        self._handlers[kind].append(handler)

    async def publish(self, event: DomainEvent) -> bool:
        """Run every handler of the event; False if one could not reach the broker or storage.

        The state change behind an event is done when it is published: a
        handler that finds a backing service down is logged and the others
        still run (each handler retries or is backed by a periodic re-check
        where the outcome matters: see their docs).
        """
        done = True
        for handler in self._handlers.get(type(event), ()):
            try:
                await handler(event)
            except Unavailable as exc:
                log.warning("reacting to %s failed: %s", type(event).__name__, exc)
                done = False
        return done
