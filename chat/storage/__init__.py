"""Storage backends, chosen by URL scheme (``sqlite:///``, ``mongodb://``).

Each backend is a package (a module per repository) whose ``url`` module
says which URLs it takes and checks them (:class:`~.base.Backend`); this
module is the one place that maps a scheme to its backend.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Backend, MessageRepository, RoomRepository, SessionRepository, Storage, UserRepository
from .mongo.url import BACKEND as MONGODB
from .sqlite.url import BACKEND as SQLITE

__all__ = [
    "BACKENDS",
    "DATABASE_FORMS",
    "Backend",
    "MessageRepository",
    "RoomRepository",
    "SessionRepository",
    "Storage",
    "UserRepository",
    "backend_of",
    "open_storage",
]

BACKENDS = (SQLITE, MONGODB)
# Every form a database URL may take, for the message that refuses one.
DATABASE_FORMS = ", ".join(backend.forms for backend in BACKENDS)


def backend_of(url: str) -> Backend:
    """The backend whose scheme ``url`` has; ValueError naming the scheme if none."""
    scheme = urlsplit(url).scheme.lower()
    for backend in BACKENDS:
        if scheme in backend.schemes:
            return backend
    raise ValueError(f"unsupported CHAT_DATABASE_URL scheme {scheme!r}: use sqlite:/// or mongodb://")


def open_storage(url: str) -> Storage:
    """Build (not connect) the backend that ``url`` names."""
    return backend_of(url).open(url)
