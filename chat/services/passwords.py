"""bcrypt hashing, always off the event loop.

bcrypt at cost 12 takes a few hundred milliseconds of CPU; run on the event
loop it would freeze every socket of the process for that long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

import bcrypt

# bcrypt ignores everything past 72 bytes, so longer passwords are refused
# rather than silently truncated.
MAX_PASSWORD_BYTES = 72
# Counted in characters: 8 bytes of UTF-8 can be as few as 2 characters.
MIN_PASSWORD_LENGTH = 8

T = TypeVar("T")


class PasswordHasher:
    def __init__(self, rounds: int = 12, executor: concurrent.futures.Executor | None = None) -> None:
        self.rounds = rounds
        self._executor = executor
        # Verifying against this when a username is unknown makes "no such
        # user" take as long as "wrong password", so timing does not reveal
        # which usernames exist.
        self._dummy_hash = bcrypt.hashpw(b"timing-equaliser", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> bytes:
        salt = bcrypt.gensalt(self.rounds)
        return await self._run(bcrypt.hashpw, password.encode("utf-8"), salt)

    async def verify(self, password: str, password_hash: bytes | None) -> bool:
        candidate = password.encode("utf-8")
        if len(candidate) > MAX_PASSWORD_BYTES:
            return False
        if password_hash is None:
            await self._run(bcrypt.checkpw, candidate, self._dummy_hash)
            return False
        return bool(await self._run(bcrypt.checkpw, candidate, password_hash))

    async def _run(self, func: Callable[..., T], *args: bytes) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
