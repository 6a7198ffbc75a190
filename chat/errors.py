"""Exceptions that cross layer boundaries.

Services raise these; handlers translate them into form errors, HTTP status
codes or protocol ``error`` frames. None of them carries Tornado types.
"""

from __future__ import annotations

import math


class ChatError(Exception):
    """Base class for every error this package raises on purpose."""


class ValidationError(ChatError):
    """The caller's input is malformed; ``field`` names the offending input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class TooLarge(ValidationError):
    """The input is well-formed but over a size limit."""


class Conflict(ChatError):
    """The record already exists (e.g. a taken username)."""


class NotFound(ChatError):
    """The record does not exist."""


class Forbidden(ChatError):
    """The caller is known but may not do this."""


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
