"""The one place that wires the application together.

``build_services`` turns :class:`~chat.config.Settings` into connected
backends and services; ``make_app`` turns those into a Tornado application;
``serve`` runs one process until SIGINT/SIGTERM. Nothing else constructs
clients or reads configuration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

import jinja2
import tornado.httpserver
import tornado.ioloop
import tornado.web
import tornado.websocket

from .broker import Broker, open_broker, open_presence
from .config import DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT, Settings
from .errors import Unavailable
from .services.accounts import Accounts
from .services.connection import CLOSE_GOING_AWAY
from .services.fanout import Fanout
from .services.messages import Messages
from .services.passwords import PasswordHasher
from .services.presence import Presence
from .services.rooms import Rooms
from .storage import Storage, open_storage
from .web import pages
from .web.base import NotFoundHandler
from .web.cookies import SessionCookie
from .web.socket import RoomSocketHandler

log = logging.getLogger(__name__)

ROOM_ID = r"([A-Za-z0-9_-]{1,64})"
# Pings find dead peers; nginx's proxy_read_timeout must exceed the interval.
# The defaults; CHAT_WS_PING_INTERVAL and CHAT_WS_PING_TIMEOUT override them.
WEBSOCKET_PING_INTERVAL = DEFAULT_WS_PING_INTERVAL
WEBSOCKET_PING_TIMEOUT = DEFAULT_WS_PING_TIMEOUT
SESSION_PURGE_INTERVAL_MS = 3600 * 1000
# At start-up, how long to wait for the database before serving without it.
STORAGE_STARTUP_WAIT_SECONDS = 3.0
STORAGE_RETRY_MAX_SECONDS = 5.0


@dataclass
class Services:
    storage: Storage
    broker: Broker
    fanout: Fanout
    accounts: Accounts
    rooms: Rooms
    messages: Messages
    presence: Presence
    executor: concurrent.futures.ThreadPoolExecutor
    sockets: set[Any] = field(default_factory=set)
    # Set on SIGTERM: /readyz answers 503 so balancers stop sending traffic.
    draining: bool = False
    background: set["asyncio.Task[None]"] = field(default_factory=set)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.presence.stop()
        await self.fanout.stop()
        await self.broker.disconnect()
        await self.storage.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _connect_storage(storage: Storage) -> None:
    """Connect, retrying until the database answers.

    A process (re)started by supervisord while the database is down must not
    crash-loop into supervisord's FATAL state: it starts serving at once
    (pages answer 503, sends get ``unavailable``) and finishes connecting when
    the database is back.
    """
    delay = 0.5
    while True:
        try:
            await storage.connect()
            return
        except Unavailable as exc:
            log.warning("database unavailable at start-up (%s); retrying in %.1fs", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, STORAGE_RETRY_MAX_SECONDS)


async def build_services(settings: Settings) -> Services:
    storage = open_storage(settings.database_url)
    broker = open_broker(settings.broker_url)
    connecting = asyncio.create_task(_connect_storage(storage), name="storage-connect")
    try:
        await asyncio.wait_for(asyncio.shield(connecting), STORAGE_STARTUP_WAIT_SECONDS)
    except asyncio.TimeoutError:
        pass  # serve now; the task keeps trying in the background
    await broker.connect()
    # bcrypt releases the GIL, so a small pool uses the cores without
    # starving the event loop.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="bcrypt")
    hasher = PasswordHasher(settings.bcrypt_rounds, executor)
    messages = Messages(storage, settings.history_limit)
    fanout = Fanout(broker, messages.backfill, messages.stored_seq, sweep_interval=settings.catchup_interval_seconds)
    presence = Presence(open_presence(broker), fanout, settings.instance,
                        ttl=settings.presence_ttl_seconds, heartbeat=settings.presence_heartbeat_seconds)
    await fanout.start()
    await presence.start()
    return Services(
        storage=storage,
        broker=broker,
        fanout=fanout,
        accounts=Accounts(storage, hasher, settings.session_max_age),
        rooms=Rooms(storage),
        messages=messages,
        presence=presence,
        executor=executor,
        background={connecting},
    )


def make_app(settings: Settings, services: Services) -> tornado.web.Application:
    jinja_env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(settings.template_path)),
        autoescape=True,
        auto_reload=settings.debug,
        undefined=jinja2.StrictUndefined,
    )
    handlers = [
        (r"/", pages.IndexHandler),
        (r"/register", pages.RegisterHandler),
        (r"/login", pages.LoginHandler),
        (r"/logout", pages.LogoutHandler),
        (r"/rooms", pages.RoomsHandler),
        (rf"/rooms/{ROOM_ID}", pages.RoomHandler),
        (rf"/rooms/{ROOM_ID}/ws", RoomSocketHandler),
        (r"/healthz", pages.HealthHandler),
        (r"/readyz", pages.ReadinessHandler),
    ]
    return tornado.web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        static_path=str(settings.static_path),
        login_url="/login",
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Lax", "secure": settings.cookie_secure},
        websocket_max_message_size=settings.max_frame_bytes,
        websocket_ping_interval=settings.ws_ping_interval,
        websocket_ping_timeout=settings.ws_ping_timeout,
        debug=settings.debug,
        compress_response=True,
        chat_settings=settings,
        jinja_env=jinja_env,
        session_cookie=SessionCookie(settings.cookie_secrets, settings.session_max_age, settings.cookie_secure),
        storage=services.storage,
        broker=services.broker,
        fanout=services.fanout,
        accounts=services.accounts,
        rooms=services.rooms,
        messages=services.messages,
        presence=services.presence,
        sockets=services.sockets,
        services=services,
    )


async def _purge_sessions(storage: Storage) -> None:
    try:
        removed = await storage.sessions.purge_expired()
        if removed:
            log.info("purged %d expired sessions", removed)
    except Unavailable as exc:
        log.warning("could not purge expired sessions: %s", exc)


async def serve(settings: Settings) -> None:
    """Run one chat process until it is told to stop."""
    services = await build_services(settings)
    app = make_app(settings, services)
    server = tornado.httpserver.HTTPServer(app, xheaders=settings.xheaders)
    server.listen(settings.port, settings.host)
    log.info("chat %s listening on http://%s:%d (database %s, broker %s)", settings.instance,
             settings.host, settings.port, settings.database_url.split("://")[0], settings.broker_url.split("://")[0])

    purge = tornado.ioloop.PeriodicCallback(lambda: _purge_sessions(services.storage), SESSION_PURGE_INTERVAL_MS)
    purge.start()
    await _purge_sessions(services.storage)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    await shutdown(settings, services, server, purge)


async def shutdown(settings: Settings, services: Services, server: tornado.httpserver.HTTPServer,
                   purge: tornado.ioloop.PeriodicCallback) -> None:
    """Stop gracefully: no new connections, sockets told to go elsewhere, in-flight sends finished.

    Clients reconnect through the load balancer to another process and resume
    with ``since``; a message that was being stored completes (and is
    published), and its sender, who may have missed the ack, re-sends it with
    the same client_id, which stores nothing twice.
    """
    sockets = list(services.sockets)
    log.info("shutting down: closing %d sockets", len(sockets))
    services.draining = True
    purge.stop()
    server.stop()
    for socket in sockets:
        socket.close(CLOSE_GOING_AWAY, "server shutting down; reconnect")
    connections = [s.connection for s in sockets if getattr(s, "connection", None) is not None]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.wait_idle() for c in connections)),
                               settings.shutdown_grace_seconds)
    except asyncio.TimeoutError:
        log.warning("shutdown: some sends did not finish within %.0fs", settings.shutdown_grace_seconds)
    await asyncio.sleep(0.1)  # let the close frames go out
    await server.close_all_connections()
    await services.close()
    log.info("shut down")
