"""What the server's edge does with a send or a frame, for tests that drive the services directly.

The socket handler hands frames to a connection's queue (``submit``), and a
send is checked and rendered (``Messages.prepare``) before it is queued for
storage (``Messages.submit``); these do the same and wait for the outcome.
"""

from __future__ import annotations

from chat.models import Message, Room, User
from chat.services.conversation.messages import Messages
from chat.services.realtime.connection import RoomConnection


async def post(messages: Messages, user: User, room: Room, client_id: str, body: str) -> tuple[Message, bool]:
    """Store a message as a socket's send does; returns it and whether it is new."""
    return await messages.submit(await messages.prepare(user, room, client_id, body))


async def receive(connection: RoomConnection, text: str | bytes) -> None:
    """Hand one frame to the connection and wait until it is handled, through to its ack."""
    await connection.submit(text)
    await connection.wait_idle()
