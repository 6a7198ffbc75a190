"""The composition root: settings in, a connected set of services out.

:func:`build_services` is the only place that constructs backends and
services and wires them to each other; the server, the tools and the tests
all call it (tests pass fakes or fast settings as overrides). Nothing here
imports Tornado: :mod:`chat.app` puts the result behind the web handlers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .broker import Backplane, Broker, open_backplane
from .config import Settings
from .errors import Unavailable
from .events import EventBus, SessionsEnded
from .services.conversation.messages import Messages
from .services.conversation.rendering_pool import RenderPool
from .services.identity.accounts import Accounts
from .services.identity.passwords import PasswordHasher
from .services.limits import Limiter
from .services.operations.administration import Administration
from .services.realtime.admission import SocketAdmissions
from .services.realtime.connection import ConnectionPolicy, Connections
from .services.realtime.fanout import Fanout
from .services.realtime.presence import Presence
from .services.realtime.relay import Relay
from .services.realtime.revocation import Revocations
from .services.realtime.userstream import UserStreams
from .services.rooms.catalog import Rooms
from .services.rooms.membership import Memberships
from .services.rooms.moderation import Moderation
from .services.rooms.unread import Unread
from .storage import Storage, open_storage
from .wire.events import MEMBER_REMOVED, PRESENCE_CHANGED

log = logging.getLogger(__name__)

# At start-up, how long to wait for the database before serving without it.
STORAGE_STARTUP_WAIT_SECONDS = 3.0
STORAGE_RETRY_MAX_SECONDS = 5.0
SESSION_PURGE_INTERVAL_SECONDS = 3600.0
# bcrypt releases the GIL, so a small pool uses the cores without starving
# the event loop.
PASSWORD_HASHING_THREADS = 4


@dataclass
class Services:
    """Everything a chat process runs, built and wired by :func:`build_services`."""

    settings: Settings
    storage: Storage
    broker: Broker
    fanout: Fanout
    presence: Presence
    accounts: Accounts
    rooms: Rooms
    memberships: Memberships
    moderation: Moderation
    unread: Unread
    user_streams: UserStreams
    messages: Messages
    connections: Connections
    admissions: SocketAdmissions
    revocations: Revocations
    relay: Relay
    events: EventBus
    limiter: Limiter
    executor: concurrent.futures.Executor
    # What python -m chat.admin does; the server itself never calls it.
    admin: Administration
    # Renders Markdown off the event loop; its workers start on the first body that needs one.
    render_pool: RenderPool | None = None
    # Set on SIGTERM: /readyz answers 503 so balancers stop sending traffic.
    draining: bool = False
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, storage_wait: float = STORAGE_STARTUP_WAIT_SECONDS) -> None:
        """Connect and start the background work.

        A process (re)started by supervisord while the database is down must
        not crash-loop into supervisord's FATAL state: after ``storage_wait``
        seconds it starts serving anyway (pages answer 503, sends get
        ``unavailable``) and finishes connecting when the database is back.
        """
        connecting = self._run_in_background(_connect_storage(self.storage), "storage-connect")
        # After the wait, serve anyway: the task keeps trying in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connecting), storage_wait)
        await self.broker.connect()
        await self.fanout.start()
        await self.presence.start()
        await self.revocations.start()
        await self.relay.start()
        self._run_in_background(self._purge_sessions(), "session-purge")
        self._run_in_background(self._renew_socket_leases(), "socket-leases")

    def _run_in_background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _purge_sessions(self) -> None:
        """Delete expired sessions now and then (no TTL indexes: FerretDB v1 lacks them)."""
        while True:
            try:
                removed = await self.storage.sessions.purge_expired()
                if removed:
                    log.info("purged %d expired sessions", removed)
            except Unavailable as exc:
                log.warning("could not purge expired sessions: %s", exc)
            await asyncio.sleep(SESSION_PURGE_INTERVAL_SECONDS)

    async def _renew_socket_leases(self) -> None:
        """Keep this process's sockets counted in the per-user and per-address limits."""
        while True:
            await asyncio.sleep(self.admissions.lease_seconds / 3)
            try:
                await self.admissions.renew_leases()
            except Unavailable as exc:
                log.warning("could not renew socket leases: %s", exc)

    def going_away(self) -> None:
        """The process is shutting down: stop giving back, socket by socket, what closing sockets held.

        Their places in the socket limits, their presence in each room and
        each room's subscription go back all at once afterwards
        (``admissions.release_all``, ``close``): a few round trips, where
        thousands of sockets closing one by one took seconds of a restart.
        """
        self.draining = True
        self.admissions.going_away = True
        self.presence.going_away = True
        self.fanout.going_away = True

    async def close(self) -> None:
        await self.revocations.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.presence.stop()
        await self.fanout.stop()
        await self.broker.disconnect()
        await self.limiter.close()
        await self.storage.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.render_pool is not None:
            await self.render_pool.close()


async def _connect_storage(storage: Storage) -> None:
    """Connect, retrying with backoff until the database answers."""
    delay = 0.5
    while True:
        try:
            await storage.connect()
            return
        except Unavailable as exc:
            log.warning("database unavailable at start-up (%s); retrying in %.1fs", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, STORAGE_RETRY_MAX_SECONDS)


def build_services(
    settings: Settings,
    *,
    storage: Storage | None = None,
    backplane: Backplane | None = None,
    executor: concurrent.futures.Executor | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Services:
    """Build (not connect: see :meth:`Services.start`) every service for ``settings``.

    The keyword arguments replace a part with one the caller made (a fake, an
    in-memory database, a clock the test moves); everything else comes from
    ``settings``. ``clock`` measures intervals (rate limits, session
    re-checks); ``wall_clock`` is shared time between processes (presence
    expiry).
    """
    storage = storage or open_storage(settings.database_url)
    metrics.measure_storage(storage)
    backplane = backplane or open_backplane(settings.broker_url, clock=wall_clock)
    executor = executor or concurrent.futures.ThreadPoolExecutor(
        max_workers=PASSWORD_HASHING_THREADS, thread_name_prefix="bcrypt"
    )
    render_pool = RenderPool()
    messages = Messages(storage, settings.history_limit, render_pool=render_pool)
    fanout = Fanout(
        backplane.broker,
        messages,
        remember=settings.history_limit,
        gap_retry=settings.fanout_gap_retry_seconds,
        sweep_interval=settings.catchup_interval_seconds,
    )
    presence = Presence(
        backplane.presence,
        fanout,
        settings.instance,
        ttl=settings.presence_ttl_seconds,
        heartbeat=settings.presence_heartbeat_seconds,
    )
    limiter = Limiter(
        backplane.limits_uri,
        settings.limit_rules(),
        clock=wall_clock,
        ipv6_prefix=settings.ipv6_prefix_length,
        storage_options=backplane.limits_options,
    )
    # The services below realtime publish what happened here; who reacts is
    # wired at the end (see chat.events for every event and its owner).
    events = EventBus()
    accounts = Accounts(
        storage,
        PasswordHasher(settings.bcrypt_rounds, executor, max_in_flight=settings.bcrypt_max_in_flight),
        settings.session_max_age,
        settings.session_idle_seconds,
        limiter=limiter,
        events=events,
    )
    rooms = Rooms(storage, limiter, events=events)
    memberships = Memberships(storage, rooms, events, limiter)
    moderation = Moderation(storage, rooms, messages, events, limiter)
    unread = Unread(storage, memberships, messages, events)
    user_streams = UserStreams(fanout, unread, accounts, memberships)
    admissions = SocketAdmissions(
        limiter,
        backplane.leases,
        settings.instance,
        max_sockets_per_user=settings.max_sockets_per_user,
        max_sockets_per_ip=settings.max_sockets_per_ip,
    )
    connections = Connections(
        messages=messages,
        memberships=memberships,
        moderation=moderation,
        unread=unread,
        accounts=accounts,
        fanout=fanout,
        presence=presence,
        limiter=limiter,
        admissions=admissions,
        policy=ConnectionPolicy(
            instance=settings.instance,
            session_recheck_seconds=settings.session_recheck_seconds,
            resume_max_messages=settings.resume_max_messages,
            history_frame_max_bytes=settings.history_frame_max_bytes,
        ),
        clock=clock,
    )
    revocations = Revocations(fanout, (connections, user_streams), accounts, settings.session_recheck_seconds)
    relay = Relay(fanout, backplane.broker, rooms)

    # Who reacts to what: every subscription of the process, here and nowhere else.
    fanout.on_control(PRESENCE_CHANGED, presence.changed)
    fanout.on_control(MEMBER_REMOVED, connections.member_removed)
    relay.subscribe(events)
    events.subscribe(SessionsEnded, revocations.sessions_ended)
    return Services(
        settings=settings,
        storage=storage,
        broker=backplane.broker,
        fanout=fanout,
        presence=presence,
        accounts=accounts,
        rooms=rooms,
        memberships=memberships,
        moderation=moderation,
        unread=unread,
        user_streams=user_streams,
        messages=messages,
        connections=connections,
        admissions=admissions,
        revocations=revocations,
        limiter=limiter,
        executor=executor,
        render_pool=render_pool,
        relay=relay,
        events=events,
        admin=Administration(storage, accounts, memberships, moderation, events),
    )
