"""Posting messages and reading history."""

from __future__ import annotations

from ..errors import TooLarge, ValidationError
from ..models import Message, NewMessage, Room, User
from ..storage import Storage

MAX_BODY_LENGTH = 4000


def clean_body(body: str) -> str:
    """Trim and check a message body; raise ValidationError or TooLarge."""
    body = body.strip()
    if not body:
        raise ValidationError("message body is empty", field="body")
    if len(body) > MAX_BODY_LENGTH:
        raise TooLarge(f"message body is {len(body)} characters; the limit is {MAX_BODY_LENGTH}", field="body")
    return body


class Messages:
    def __init__(self, storage: Storage, history_limit: int = 50) -> None:
        self._storage = storage
        self.history_limit = history_limit

    async def post(self, user: User, room: Room, client_id: str, body: str) -> tuple[Message, bool]:
        """Store a message durably. Returns it and whether it is new.

        Resending a ``client_id`` already stored returns the original, so a
        client that lost an ack can retry safely.
        """
        new = NewMessage(
            room_id=room.id, user_id=user.id, username=user.username, body=clean_body(body), client_id=client_id
        )
        return await self._storage.messages.add(new)

    async def recent(self, room_id: str) -> tuple[list[Message], bool]:
        return await self._storage.messages.latest(room_id, self.history_limit)

    async def after(self, room_id: str, since_seq: int, limit: int) -> tuple[list[Message], bool]:
        return await self._storage.messages.after(room_id, since_seq, limit)

    async def stored_seq(self, room_id: str) -> int:
        latest, _ = await self._storage.messages.latest(room_id, 1)
        return latest[-1].seq if latest else 0

    async def backfill(self, room_id: str, since_seq: int) -> list[Message]:
        messages, _ = await self._storage.messages.after(room_id, since_seq, 1000)
        return messages
