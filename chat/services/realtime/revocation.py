"""Ending a session ends its sockets, on every process; so does losing a room.

When accounts end sessions (sign-out, sign-out everywhere, a password change,
a disabled account: :class:`~chat.events.SessionsEnded`), this service closes
the matching local sockets (room sockets and event streams alike) at once and
announces the session keys on the process-wide control channel; every other
process closes its own.

Pub/sub is at most once, so each process also re-checks its open sockets
against storage every ``recheck_seconds``, and at once after the broker
reconnects: their sessions (which is also how expiry and idle timeouts reach
sockets that only read), and whether their people may still read their
rooms (a removal or a ban announced while the broker was down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, Protocol

from ...broker import CONTROL_CHANNEL
from ...errors import Unavailable
from ...events import SessionsEnded
from ...wire.events import ended_sessions, sessions_ended_event
from ..identity.accounts import Accounts
from .fanout import Fanout

log = logging.getLogger(__name__)

# The periodic re-check never runs more often than this (a recheck setting of
# 0 means "before every send", not "poll storage in a loop").
MIN_RECHECK_SECONDS = 1.0
# While the broker is down, re-checks come at least this often.
OUTAGE_RECHECK_SECONDS = 5.0


class SessionSockets(Protocol):
    """One kind of this process's sockets that belong to a session (room sockets, event streams)."""

    def session_keys(self) -> set[str]:
        """The stored keys of the sessions behind the open sockets."""

    def end_sessions(self, keys: Collection[str]) -> int:
        """Close the sockets of these sessions; returns how many."""

    async def recheck_access(self) -> int:
        """Close (or narrow) the sockets whose people may no longer read their rooms; returns how many."""


class Revocations:
    def __init__(
        self, fanout: Fanout, sockets: Sequence[SessionSockets], accounts: Accounts, recheck_seconds: float
    ) -> None:
        self._fanout = fanout
        self._sockets = tuple(sockets)
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

    async def sessions_ended(self, event: SessionsEnded) -> None:
        """Close the sockets of these sessions here, and tell every other process (retried through an outage)."""
        self._end_sessions(set(event.keys))
        await self._fanout.publish_with_retry(CONTROL_CHANNEL, sessions_ended_event(event.keys))

    def _heard(self, payload: str) -> None:
        try:
            keys = ended_sessions(payload)
        except (ValueError, TypeError):
            log.warning("dropping a malformed control event")
            return
        self._end_sessions(keys)

    def _end_sessions(self, keys: set[str]) -> int:
        return sum(sockets.end_sessions(keys) for sockets in self._sockets)

    async def _recheck_loop(self) -> None:
        interval = max(self.recheck_seconds, MIN_RECHECK_SECONDS)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck_now.wait(), min(interval, OUTAGE_RECHECK_SECONDS))
                woken = True
            self._recheck_now.clear()
            # Early after a broker reconnect (announcements may be lost), and
            # often while the broker is down: no announcement reaches this
            # process then, but the fan-out still delivers from storage.
            if woken or not self._fanout.broker.receiving or loop.time() - last >= interval:
                last = loop.time()
                try:
                    await self.recheck()
                except Exception:
                    # A bug here must not end the re-checks for the life of the process.
                    log.exception("re-checking open sockets failed")

    async def recheck(self) -> int:
        """Close sockets whose sessions are no longer live, or whose rooms are no longer theirs; returns how many."""
        closed = 0
        keys = set().union(*(sockets.session_keys() for sockets in self._sockets))
        if keys:
            try:
                live = await self._accounts.live_sessions(keys)
            except Unavailable as exc:
                log.warning("session re-check failed: %s", exc)
            else:
                closed += self._end_sessions(keys - live)
        for sockets in self._sockets:
            try:
                closed += await sockets.recheck_access()
            except Unavailable as exc:
                log.warning("membership re-check failed: %s", exc)
        return closed

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
