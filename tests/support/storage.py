"""Open a storage backend for a test and always close it; seed data straight into it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable

from chat.models import NewMessage
from chat.storage import Storage, open_storage


@contextlib.asynccontextmanager
async def connected_storage(url: str) -> AsyncIterator[Storage]:
    store = open_storage(url)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


async def seed_messages(database_url: str, username: str, room_id: str, bodies: Iterable[str]) -> None:
    """Store ``bodies`` in the room as ``username``'s messages, in order, as if each had been sent.

    For tests that need history to page through: storing directly is much
    faster than a round trip per message over a socket, and takes the same
    path to the database (seq assignment included) as a send does.
    """
    async with connected_storage(database_url) as storage:
        user = await storage.users.get_by_username(username)
        room = await storage.rooms.get(room_id)
        if user is None or room is None:
            raise LookupError(f"no user {username!r} or no room {room_id!r} in {database_url}")
        for body in bodies:
            await storage.messages.add(
                NewMessage(
                    room_id=room.id,
                    user_id=user.id,
                    username=user.username,
                    body=body,
                    client_id=f"seed-{uuid.uuid4().hex}",
                )
            )
