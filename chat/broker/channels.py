"""Every broker channel a chat process publishes on or listens to, named in one place.

* ``chat:room:{room_id}``: a room's traffic between processes (messages,
  revisions, typing, presence and membership notices, removals);
* ``chat:user:{user_id}``: one person's event streams (read markers, their
  rooms changed);
* ``chat:control``: sessions that ended, for every process;
* ``chat:rooms``: a stored room changed, for every process's cache.
"""

from __future__ import annotations

CONTROL_CHANNEL = "chat:control"
ROOMS_CHANNEL = "chat:rooms"


def room_channel(room_id: str) -> str:
    """The one channel that carries a room's traffic between processes."""
    return f"chat:room:{room_id}"


def user_channel(user_id: str) -> str:
    """The channel of one person's event streams, on every process."""
    return f"chat:user:{user_id}"
