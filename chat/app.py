"""The web application: URL table and Tornado settings over the services, and a process's life.

:func:`chat.bootstrap.build_services` wires the services; :func:`make_app`
puts them behind the handlers; :func:`start_serving` connects and listens,
and :func:`serve` runs one process that way until SIGINT or SIGTERM and then
shuts it down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

import tornado.httpserver
import tornado.web

from . import metrics
from .bootstrap import Services, build_services
from .config import Settings
from .services.limits import address_key
from .stalls import StallWatch
from .web import pages
from .web.base import ChatApplication, NotFoundHandler
from .web.cookies import SessionCookie
from .web.proxies import TrustedProxies
from .web.rendering import make_jinja_env
from .web.server import GuardedHTTPServer
from .web.socket import RoomSocketHandler, UserEventsHandler
from .web.static import StaticFiles
from .wire.refusals import Close
from .wire.text import USERNAME_REGEX

log = logging.getLogger(__name__)

ROOM_ID = r"([A-Za-z0-9_-]{1,64})"
USERNAME = f"({USERNAME_REGEX})"
# Longer than nginx's keep-alive to the processes, so nginx closes first.
IDLE_CONNECTION_SECONDS = 120.0
BODY_TIMEOUT_SECONDS = 30.0
# A body over the form limit is read and thrown away up to this size, so the
# browser that sent it sees the 413 page instead of a reset connection.
MAX_DRAINED_BODY_BYTES = 8 * 1024 * 1024


def routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """The URL table: each path pattern and the handler that answers it."""
    return [
        (r"/", pages.IndexHandler),
        (r"/register", pages.RegisterHandler),
        (r"/login", pages.LoginHandler),
        (r"/logout", pages.LogoutHandler),
        (r"/account", pages.AccountHandler),
        (r"/account/(password|sign-out-others)", pages.AccountActionHandler),
        (r"/rooms", pages.RoomsHandler),
        (rf"/rooms/{ROOM_ID}", pages.RoomHandler),
        (rf"/rooms/{ROOM_ID}/ws", RoomSocketHandler),
        (rf"/rooms/{ROOM_ID}/access", pages.RoomAccessHandler),
        (rf"/rooms/{ROOM_ID}/(join|leave|invite|remove|ban|topic|rename|role)", pages.RoomActionHandler),
        (rf"/dm/{USERNAME}", pages.DirectHandler),
        (r"/events/ws", UserEventsHandler),
        (r"/admin", pages.AdminHandler),
        (r"/admin/(disable|enable)", pages.AdminActionHandler),
        (r"/healthz", pages.HealthHandler),
        (r"/readyz", pages.ReadinessHandler),
        (r"/metrics", pages.MetricsHandler),
    ]


def make_app(settings: Settings, services: Services) -> ChatApplication:
    session_cookie = SessionCookie(settings.cookie_secrets, settings.session_max_age, settings.cookie_secure)
    return ChatApplication(
        routes(),
        services=services,
        jinja=make_jinja_env(settings),
        session_cookie=session_cookie,
        proxies=TrustedProxies(settings.trusted_proxies),
        default_handler_class=NotFoundHandler,
        static_path=str(settings.static_path),
        static_handler_class=StaticFiles,
        login_url="/login",
        xsrf_cookies=True,
        xsrf_cookie_name=session_cookie.xsrf_name,
        xsrf_cookie_kwargs=session_cookie.xsrf_attributes(),
        # POSTs a browser marks as cross-site must also come from an allowed
        # origin (Sec-Fetch-Site / Origin), on top of the XSRF token.
        cross_origin_protection=True,
        # Explicit, never Tornado's default (10 MiB): a bigger frame closes the socket with 1009.
        websocket_max_message_size=settings.max_frame_bytes,
        # Pings find dead peers; nginx's proxy_read_timeout must exceed the interval.
        websocket_ping_interval=settings.ws_ping_interval,
        websocket_ping_timeout=settings.ws_ping_timeout,
        debug=settings.debug,
        compress_response=True,
    )


@dataclass
class Serving:
    """One process's services and HTTP server, listening; :meth:`stop` shuts them down gracefully."""

    services: Services
    server: GuardedHTTPServer
    stalls: StallWatch | None

    async def stop(self) -> None:
        await shutdown(self.services, self.server)
        if self.stalls is not None:
            self.stalls.stop()


async def start_serving(settings: Settings, *, watch_stalls: bool = True) -> Serving:
    """Build the services and the app, connect, and listen on the settings' port.

    ``watch_stalls``: dump the stacks of a stalled loop (a process's own;
    tests that serve from a thread of theirs leave it off).
    """
    services = build_services(settings)
    await services.start()
    metrics.watch(
        room_sockets=lambda: len(services.connections),
        event_streams=lambda: len(services.user_streams),
        rooms=services.fanout.rooms_with_listeners,
    )
    # The body limit is the app's own, nginx or not (ChatApplication.find_handler).
    # No xheaders: Tornado would believe X-Real-IP from anyone;
    # ChatApplication believes trusted proxies only.
    app = make_app(settings, services)
    server = GuardedHTTPServer(
        app,
        # Bodies up to this are read, and one over the form limit is drained
        # and answered with a 413 page (ChatApplication.find_handler); past it
        # the connection is closed.
        max_body_size=MAX_DRAINED_BODY_BYTES,
        # A client must not hold a connection open by trickling bytes: idle
        # keep-alive connections and slow request bodies are cut (WebSockets
        # keep to their own pings); see GuardedHTTPServer for clients that
        # reach a process port without nginx in front.
        idle_connection_timeout=IDLE_CONNECTION_SECONDS,
        body_timeout=BODY_TIMEOUT_SECONDS,
    )
    server.guard(
        app.proxies,
        lambda ip: address_key(ip, settings.ipv6_prefix_length),
        settings.max_connections_per_ip,
        settings.header_timeout_seconds,
    )
    server.listen(settings.port, settings.host)
    stalls = StallWatch(settings.loop_stall_seconds) if watch_stalls and settings.loop_stall_seconds > 0 else None
    if stalls is not None:
        stalls.start()
    log.info(
        "chat %s listening on http://%s:%d (database %s, broker %s)",
        settings.instance,
        settings.host,
        settings.port,
        settings.database_url.split("://")[0],
        settings.broker_url.split("://")[0],
    )
    return Serving(services, server, stalls)


async def serve(settings: Settings) -> None:
    """Run one chat process until it is told to stop (SIGINT, SIGTERM)."""
    serving = await start_serving(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await serving.stop()


async def shutdown(services: Services, server: tornado.httpserver.HTTPServer) -> None:
    """Stop gracefully: no new connections, sockets told to go elsewhere, in-flight sends finished.

    Clients reconnect through the load balancer to another process and resume
    with ``since``; a message that was being stored completes (and is
    published), and its sender, who may have missed the ack, re-sends it with
    the same client_id, which stores nothing twice.
    """
    grace = services.settings.shutdown_grace_seconds
    started = time.monotonic()
    log.info("shutting down: closing %d sockets", len(services.connections))
    services.going_away()
    server.stop()
    if not await services.connections.close_all(Close.GOING_AWAY, "server shutting down; reconnect", grace):
        log.warning("shutdown: some sends did not finish within %.0fs", grace)
    await asyncio.sleep(0.1)  # let the close frames go out
    await server.close_all_connections()
    # While the broker is still there: the clients are reconnecting elsewhere
    # and must not find their old sockets counted against their limits.
    await services.admissions.release_all()
    await services.close()
    log.info("shut down in %.1f s", time.monotonic() - started)
