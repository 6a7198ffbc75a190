"""The storage contract: small abstract repositories and the bundle that owns them.

Every backend implements these with the same observable behaviour, and
``tests/integration/test_storage_contract.py`` runs one suite against each.
Backends raise :class:`chat.errors.Unavailable` when their server cannot be
reached and :class:`chat.errors.Conflict` for unique-key violations; they never
leak driver exceptions for those cases.
"""

from __future__ import annotations

import abc
import datetime

from ..models import Message, NewMessage, Room, Session, User


class UserRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, username: str, password_hash: bytes) -> User:
        """Create a user. Raises Conflict if the name is taken, ignoring case."""

    @abc.abstractmethod
    async def get(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    async def get_by_username(self, username: str) -> User | None:
        """Find a user by name, ignoring case."""


class SessionRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, session_id: str, user_id: str, expires_at: datetime.datetime) -> Session: ...

    @abc.abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The live session with this id; None if unknown or expired."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> None: ...

    @abc.abstractmethod
    async def purge_expired(self) -> int:
        """Delete expired sessions (no TTL indexes: FerretDB v1 lacks them)."""


class RoomRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, name: str, creator: User) -> Room:
        """Create a room. Raises Conflict if the name is taken, ignoring case."""

    @abc.abstractmethod
    async def get(self, room_id: str) -> Room | None: ...

    @abc.abstractmethod
    async def list(self) -> list[Room]:
        """Every room, newest first."""


class MessageRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, new: NewMessage) -> tuple[Message, bool]:
        """Store a message, assigning the room's next ``seq``.

        Idempotent on ``(room_id, user_id, client_id)``: when that message
        exists already, return it with ``False`` and store nothing. Returns
        only once the write is durable per the backend's settings, because
        the caller acknowledges it to the sender.
        """

    @abc.abstractmethod
    async def latest(self, room_id: str, limit: int) -> tuple[list[Message], bool]:
        """The newest ``limit`` messages in ascending seq, and whether older ones exist."""

    @abc.abstractmethod
    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        """Messages with ``seq > since_seq`` ascending, at most ``limit``, and whether more follow."""


class Storage(abc.ABC):
    """One backend's repositories plus its connection lifecycle."""

    users: UserRepository
    sessions: SessionRepository
    rooms: RoomRepository
    messages: MessageRepository

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections and create schema/indexes; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the database answers; raise Unavailable otherwise."""
