"""What a refused request or frame is told: close codes, error codes, and the one table from exceptions to answers.

``docs/protocol.md`` lists every code; a test checks each is documented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from ..errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    ValidationError,
)


class Close(IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1; 1013 from the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect (elsewhere) and resume
    SESSION_ENDED = 1008  # policy violation: the session behind the socket ended; sign in again
    TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # storage unavailable, or the client read too slowly: back off, resume
    # Application codes (4000-4999, RFC 6455 section 7.4.2):
    REMOVED = 4403  # left, removed or banned: this room is no longer the client's; do not reconnect
    PROTOCOL_ERROR = 1002  # the client closed with a code no endpoint may send


def sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455 section 7.4, and the IANA registry).

    1004 is reserved, 1005, 1006 and 1015 only ever describe a close locally,
    other codes under 3000 are unassigned; 3000-4999 belong to libraries and
    applications.
    """
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame (docs/protocol.md lists when each is sent)."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Refusal:
    """How one kind of :class:`~chat.errors.ChatError` reaches a client."""

    status: int  # the HTTP status of a page or a refused handshake
    code: ErrorCode  # the code of an error frame on an open socket
    # Said instead of the exception's own text, which may name internals.
    public_message: str | None = None


# The one exception-to-answer table, for pages and sockets alike. Looked up by
# the exception's class hierarchy, most specific first.
REFUSALS: dict[type[BaseException], Refusal] = {
    TooLarge: Refusal(413, ErrorCode.TOO_LARGE),
    ValidationError: Refusal(400, ErrorCode.BAD_REQUEST),
    Conflict: Refusal(409, ErrorCode.BAD_REQUEST),
    NotFound: Refusal(404, ErrorCode.BAD_REQUEST),
    Forbidden: Refusal(403, ErrorCode.FORBIDDEN),
    RateLimited: Refusal(429, ErrorCode.RATE_LIMITED),
    Unavailable: Refusal(503, ErrorCode.UNAVAILABLE, "storage is unavailable right now; retry shortly"),
}


def refusal_for(exc: BaseException) -> Refusal | None:
    """The answer for ``exc``, or None if it is not one we raise on purpose (a bug: 500)."""
    for cls in type(exc).__mro__:
        refusal = REFUSALS.get(cls)
        if refusal is not None:
            return refusal
    return None


class ProtocolError(ValidationError):
    """A client frame we cannot accept; becomes a ``bad_request`` error frame."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


def retry_after_seconds(seconds: float) -> float:
    """How long a refused client is told to wait, in an error frame: rounded up to the hundredth.

    Rounded up so that a client waiting exactly this long is not refused
    again for a rounding error.
    """
    return math.ceil(seconds * 100) / 100


def retry_after_header(seconds: float) -> str:
    """The same wait as an HTTP ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
