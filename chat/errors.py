"""Exceptions that cross layer boundaries.

Services raise these; handlers translate them into form errors, HTTP status
codes or protocol ``error`` frames. None of them carries Tornado types.
"""

from __future__ import annotations

import math
from collections.abc import Collection


class ChatError(Exception):
    """Base class for every error this package raises on purpose."""


class ValidationError(ChatError):
    """The caller's input is malformed; ``field`` names the offending input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class FormErrors(ValidationError):
    """Several fields of one form are wrong: ``errors`` maps each to its message, in the form's order.

    A ValidationError about the first of them, so whoever handles one field at
    a time still says the first thing to fix.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(message, field)
        self.errors = errors


class TooLarge(ValidationError):
    """The input is well-formed but over a size limit."""


class Conflict(ChatError):
    """The record already exists (e.g. a taken username)."""


class NotFound(ChatError):
    """The record does not exist."""


class Forbidden(ChatError):
    """The caller is known but may not do this."""


class RoomArchived(Forbidden):
    """The room is archived: readable, but nothing new may be stored in it.

    ``room_ids`` names the archived rooms a refused write touched (a batch of
    messages may span rooms; see chat.services.conversation.messages).
    """

    MESSAGE = "This room is archived: it can be read, but nothing new can be posted."

    def __init__(self, room_ids: Collection[str] = ()) -> None:
        super().__init__(self.MESSAGE)
        self.room_ids = frozenset(room_ids)


class RoomGone(NotFound, LookupError):
    """The room does not exist (any more: a site administrator may delete one).

    A LookupError too, which is what storage has always raised for writes to
    a room that is not there. ``room_ids`` names the missing rooms of a batch.
    """

    def __init__(self, room_ids: Collection[str]) -> None:
        self.room_ids = frozenset(room_ids)
        super().__init__(f"no room {', '.join(sorted(self.room_ids))}: it was deleted, or never existed")


class SessionEnded(Forbidden):
    """The session behind a live connection was signed out or expired."""


class RateLimited(ChatError):
    """The caller is sending faster than allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Too many requests: try again in {math.ceil(retry_after)} s.")
        self.retry_after = retry_after


class Unavailable(ChatError):
    """A backing service (database, broker) cannot be reached right now.

    Storage and broker backends wrap their driver's connection errors in this
    so that callers can answer "try again" instead of crashing.
    """
