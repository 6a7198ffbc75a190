"""Storage backends, chosen by URL scheme (``sqlite://``, ``mongodb://``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import MessageRepository, RoomRepository, SessionRepository, Storage, UserRepository

__all__ = ["MessageRepository", "RoomRepository", "SessionRepository", "Storage", "UserRepository", "open_storage"]


def open_storage(url: str) -> Storage:
    """Build (not connect) the backend that ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStorage

        return SQLiteStorage.from_url(url)
    if scheme in {"mongodb", "mongodb+srv"}:
        from .mongo import MongoStorage

        return MongoStorage.from_url(url)
    raise ValueError(f"unsupported CHAT_DATABASE_URL scheme {scheme!r}: use sqlite:/// or mongodb://")
