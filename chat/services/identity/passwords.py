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

from ...errors import RateLimited

# bcrypt ignores everything past 72 bytes, so longer passwords are refused
# rather than silently truncated.
MAX_PASSWORD_BYTES = 72
# Counted in characters: 8 bytes of UTF-8 can be as few as 2 characters.
MIN_PASSWORD_LENGTH = 8

T = TypeVar("T")


# When every admission is taken, a caller is told to come back after this long.
BUSY_RETRY_AFTER_SECONDS = 1.0


class PasswordHasher:
    """bcrypt in a thread pool, with admission control.

    At most ``max_in_flight`` hashes run or wait at once; the next one is
    refused at once with :class:`RateLimited` instead of queueing, so a flood
    of bogus sign-ins can neither grow an unbounded queue nor make a real
    sign-in wait behind it for long.
    """

    def __init__(
        self,
        rounds: int = 12,
        executor: concurrent.futures.Executor | None = None,
        max_in_flight: int = 16,
    ) -> None:
        self.rounds = rounds
        self._executor = executor
        self.max_in_flight = max_in_flight
        self._in_flight = 0
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
        if self._in_flight >= self.max_in_flight:
            raise RateLimited(BUSY_RETRY_AFTER_SECONDS)
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        finally:
            self._in_flight -= 1
