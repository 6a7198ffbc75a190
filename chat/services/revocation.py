"""Ending a session ends its sockets, on every process.

When accounts end sessions (sign-out, sign-out everywhere, a password change,
a disabled account), this service closes the matching local sockets at once
and announces the session keys on the process-wide control channel; every
other process closes its own. Pub/sub is at most once, so each process also
re-checks the sessions of its open sockets against storage every
``recheck_seconds`` (which is also how expiry and idle timeouts reach sockets
that only read), and at once after the broker reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from typing import Any

from ..errors import Unavailable
from .accounts import Accounts
from .connection import Connections
from .fanout import Fanout

log = logging.getLogger(__name__)

CONTROL_CHANNEL = "chat:control"
SESSIONS_ENDED = "sessions_ended"
# A failed announcement is retried this long; the periodic re-check covers the rest.
ANNOUNCE_FOR_SECONDS = 30.0
# The periodic re-check never runs more often than this (a recheck setting of
# 0 means "before every send", not "poll storage in a loop").
MIN_RECHECK_SECONDS = 1.0


class Revocations:
    def __init__(self, fanout: Fanout, connections: Connections, accounts: Accounts, recheck_seconds: float) -> None:
        self._fanout = fanout
        self._connections = connections
        self._accounts = accounts
        self.recheck_seconds = recheck_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._recheck_now = asyncio.Event()

    async def start(self) -> None:
        await self._fanout.watch(CONTROL_CHANNEL, self._heard, on_resync=self._recheck_now.set)
        self._spawn(self._recheck_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def announce(self, keys: list[str]) -> None:
        """Close the sockets of these sessions here, and tell every other process."""
        self._connections.end_sessions(set(keys))
        event = json.dumps({"type": SESSIONS_ENDED, "sessions": keys}, separators=(",", ":"))
        try:
            await self._fanout.broker.publish(CONTROL_CHANNEL, event)
        except Unavailable as exc:
            log.warning("announcing %d ended sessions failed (%s); retrying in the background", len(keys), exc)
            self._spawn(self._announce_later(event))

    def _heard(self, payload: str) -> None:
        try:
            event = json.loads(payload)
            keys = event["sessions"] if event.get("type") == SESSIONS_ENDED else []
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("dropping a malformed control event")
            return
        if isinstance(keys, list):
            self._connections.end_sessions({key for key in keys if isinstance(key, str)})

    async def _announce_later(self, event: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANNOUNCE_FOR_SECONDS
        delay = 0.2
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            try:
                await self._fanout.broker.publish(CONTROL_CHANNEL, event)
                return
            except Unavailable:
                delay = min(delay * 2, 5.0)

    async def _recheck_loop(self) -> None:
        while True:
            # Woken early after a broker reconnect: announcements may be lost.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck_now.wait(), max(self.recheck_seconds, MIN_RECHECK_SECONDS))
            self._recheck_now.clear()
            await self.recheck()

    async def recheck(self) -> int:
        """Close sockets whose sessions are no longer live; returns how many."""
        keys = self._connections.session_keys()
        if not keys:
            return 0
        try:
            live = await self._accounts.live_sessions(keys)
        except Unavailable as exc:
            log.warning("session re-check failed: %s", exc)
            return 0
        return self._connections.end_sessions(keys - live)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
