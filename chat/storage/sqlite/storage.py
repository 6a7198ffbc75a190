"""The SQLite backend as a whole: its repositories over one database, built from its URL."""

from __future__ import annotations

from ..base import (
    Storage,
)
from .bans import SQLiteBans
from .database import _Database
from .memberships import SQLiteMemberships
from .mentions import SQLiteMentions
from .messages import SQLiteMessages
from .moderation import SQLiteModerationLog
from .rooms import SQLiteRooms
from .sessions import SQLiteSessions
from .users import SQLiteUsers


class SQLiteStorage(Storage):
    def __init__(self, path: str) -> None:
        self._db = _Database(path)
        self.users = SQLiteUsers(self._db)
        self.sessions = SQLiteSessions(self._db)
        self.rooms = SQLiteRooms(self._db)
        self.messages = SQLiteMessages(self._db)
        self.memberships = SQLiteMemberships(self._db)
        self.bans = SQLiteBans(self._db)
        self.moderation = SQLiteModerationLog(self._db)
        self.mentions = SQLiteMentions(self._db)

    @property
    def path(self) -> str:
        return self._db.path

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        await self._db.fetchone("SELECT 1")
