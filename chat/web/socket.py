"""The room WebSocket: authenticate the handshake, then hand frames to a RoomConnection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, cast

import tornado.httputil
import tornado.web
import tornado.websocket

from .. import logs, metrics
from ..errors import Unavailable
from ..models import Room
from ..services import audit
from ..services.realtime.admission import Admission
from ..services.realtime.connection import RoomConnection
from ..services.realtime.userstream import UserStream
from ..wire.refusals import Close, sendable_close_code
from .base import BaseHandler, ChatApplication
from .forms import read_seq
from .transport import SocketTransport, TornadoSink

log = logging.getLogger(__name__)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("leaving a room failed", exc_info=future.exception())


class _ConformingProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, but a client's close code is echoed only when it may be sent at all.

    Tornado answers a close frame with the client's own code (RFC 6455
    section 5.5.1), even 1005 or 1006, which no endpoint may put on the wire;
    a client that sends one has broken the protocol, and is told so (1002).
    """

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code is not None and not sendable_close_code(code):
            code, reason = Close.PROTOCOL_ERROR, "invalid close code"
        super().close(code, reason)


class AuthenticatedSocket(BaseHandler, tornado.websocket.WebSocketHandler):
    """A WebSocket of a signed-in user from one of our pages, counted in their socket limits."""

    admission: Admission | None = None
    transport: SocketTransport | None = None
    renders_pages = False
    # The ids this socket's log lines carry (request, connection, user, client).
    log_context: Mapping[str, str] | None = None

    async def prepare(self) -> None:
        # Refusals happen here, before the upgrade, so clients get a plain
        # HTTP status they can act on (403 wrong site, 401 sign in, 404 gone,
        # 400 bad since, 503 retry).
        # The origin first, before any database work: a browser sends it on
        # every handshake, and only pages of ours may open our sockets with
        # the user's cookie (cross-site WebSocket hijacking). Tornado lets a
        # request without Origin through as "not a browser"; we do not.
        if not self.origin_allowed(self.request.headers.get("Origin")):
            raise tornado.web.HTTPError(403, "origin not allowed")
        await super().prepare()
        if self.current_user is None:
            raise tornado.web.HTTPError(401, "sign in first")
        await self.prepare_socket()
        # Last, so that nothing after it can refuse the handshake and leave
        # the place taken (a taken place expires by itself anyway).
        self.admission = await self.services.admissions.admit(self.user, self.client_ip)
        # This socket's id on every line logged about it: the handshake's
        # access line, open(), and each frame's on_message(), which Tornado
        # runs in tasks started from this one (they copy its context).
        self.log_context = logs.bind(connection_id=logs.new_id())

    async def prepare_socket(self) -> None:
        """Check what this kind of socket needs from the request (raise HTTPError or a ChatError to refuse)."""

    def on_connection_close(self) -> None:
        # Tornado may call this from whatever noticed the close (the fan-out
        # dropping a slow socket, say): log on_close() as this socket's, and
        # leave the caller's context as it was.
        with logs.bound(self.log_context or logs.current_context()):
            super().on_connection_close()

    def render_error(self, status_code: int, title: str, message: str) -> None:
        metrics.HANDSHAKES_REFUSED.labels(str(status_code)).inc()
        audit.throttled(
            "handshake_refused",
            self.client_ip,
            str(status_code),
            status=status_code,
            user=self.user.id if self.current_user else None,
            ip=self.client_ip,
            origin=self.request.headers.get("Origin"),
        )
        # A refused handshake is read by a program, not a person: plain JSON.
        self.finish({"error": self._reason})

    def check_origin(self, origin: str) -> bool:
        # Tornado asks again after prepare(); the answer is the same.
        return self.origin_allowed(origin)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _ConformingProtocol(self, protocol.mask_outgoing, protocol.params)
        return protocol

    def get_compression_options(self) -> None:
        # permessage-deflate stays off: compressing secrets next to
        # attacker-chosen text leaks them by length (CRIME/BREACH), and
        # inflating frames is a memory bomb. Tornado's default; said here
        # so it stays that way.
        return None

    def shed_handshake(self) -> str | None:
        """Let go of what only the handshake needed; returns the request's Origin, read before.

        A socket lives for hours, and what Tornado keeps of its upgrade
        request (headers, parsed cookies, arguments, the 101's own headers,
        the template namespace) was a few KiB of every idle socket's memory.
        Nothing reads them after open(): the client's address and the user
        are kept as values.
        """
        request = self.request
        origin = request.headers.get("Origin")
        # Cleared in place: the detached HTTP connection holds the same object.
        request.headers.clear()
        request.__dict__.pop("_cookies", None)  # Tornado parses them again, from no headers, if asked
        request.arguments, request.query_arguments, request.body_arguments, request.files = {}, {}, {}, {}
        self._headers = tornado.httputil.HTTPHeaders()
        self.ui = None  # type: ignore[assignment]  # as Tornado's own _break_cycles does when the socket closes
        return origin

    def make_transport(self, who: str) -> SocketTransport:
        self.set_nodelay(True)
        config = self.config
        self.transport = SocketTransport(
            TornadoSink(self),
            config.ws_max_buffer_bytes,
            who,
            batcher=cast(ChatApplication, self.application).write_batcher,
        )
        return self.transport


class RoomSocketHandler(AuthenticatedSocket):
    connection: RoomConnection | None = None
    room: Room
    _since: int | None = None
    _rev: int | None = None

    async def prepare_socket(self) -> None:
        self.room = await self.memberships.room_for(self.user, self.path_args[0])
        since = self.get_query_argument("since", None)
        if since is not None:
            self._since = read_seq("since", since)
        rev = self.get_query_argument("rev", None)
        if rev is not None:
            self._rev = read_seq("rev", rev)

    async def open(self, *args: str, **kwargs: str) -> None:
        origin = self.shed_handshake()
        transport = self.make_transport(f"{self.user.username} in room {self.room.id}")
        self.connection = self.services.connections.create(
            transport, self.user, self.room, self.session_token or "", self.admission
        )
        audit.event(
            "socket_opened",
            user=self.user.id,
            room=self.room.id,
            ip=self.client_ip,
            origin=origin,
        )
        try:
            await self.connection.open(self._since, self._rev)
        except Unavailable as exc:
            log.warning("closing socket: cannot load room %s: %s", self.room.id, exc)
            transport.close(Close.TRY_AGAIN_LATER, "storage unavailable; reconnect shortly")
        except Exception:
            log.exception("closing socket: opening room %s failed", self.room.id)
            transport.close(Close.INTERNAL_ERROR, "internal error; reconnect shortly")

    async def on_message(self, message: str | bytes) -> None:
        if self.connection is not None:
            await self.connection.submit(message)

    def on_close(self) -> None:
        if self.connection is not None:
            audit.event("socket_closed", user=self.user.id, room=self.room.id, code=self.close_code, ip=self.client_ip)
            leaving = self.connection.close()
        elif self.admission is not None:  # closed before open() ran
            leaving = self.services.admissions.release(self.admission)
        else:
            return
        asyncio.ensure_future(leaving).add_done_callback(_log_failure)


class UserEventsHandler(AuthenticatedSocket):
    """``/events/ws``: the signed-in person's badges and markers, for the sidebar of every page."""

    stream: UserStream | None = None

    async def open(self, *args: str, **kwargs: str) -> None:
        self.shed_handshake()
        transport = self.make_transport(f"{self.user.username}'s events")
        self.stream = self.services.user_streams.create(transport, self.user, self.session_token or "")
        try:
            await self.stream.open()
        except Unavailable as exc:
            log.warning("closing an event stream: %s", exc)
            transport.close(Close.TRY_AGAIN_LATER, "storage unavailable; reconnect shortly")

    async def on_message(self, message: str | bytes) -> None:
        pass  # the stream only speaks; what a client sends is ignored

    def on_close(self) -> None:
        work: list[Awaitable[None]] = []
        if self.stream is not None:
            work.append(self.stream.close())
        if self.admission is not None:
            work.append(self.services.admissions.release(self.admission))
        if work:
            asyncio.ensure_future(asyncio.gather(*work)).add_done_callback(_log_failure)
