"""The room WebSocket: authenticate the handshake, then hand frames to RoomConnection."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket

from ..errors import NotFound, Unavailable
from ..services.connection import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN_LATER, RoomConnection
from ..services.fanout import Fanout
from ..services.ratelimit import TokenBucket
from .base import SessionMixin

log = logging.getLogger(__name__)



def _ignore_closed(future: "asyncio.Future[None]") -> None:
    # A write can fail because the peer went away; on_close cleans up, so the
    # error needs no handling here, only retrieving so asyncio does not warn.
    if not future.cancelled():
        future.exception()


def _log_failure(future: "asyncio.Future[None]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("leaving a room failed", exc_info=future.exception())


class RoomSocketHandler(SessionMixin, tornado.websocket.WebSocketHandler):
    connection: RoomConnection | None = None
    _since: int | None = None
    # Bytes handed to write_message whose frames are not yet written to the
    # network; more than ``ws_max_buffer_bytes`` means the client stopped
    # reading (or reads slower than the room talks).
    _unflushed_bytes = 0
    _too_slow = False

    @property
    def fanout(self) -> Fanout:
        return self.settings["fanout"]

    async def prepare(self) -> None:
        # Refusals happen here, before the upgrade, so clients get a plain
        # HTTP status they can act on (401 sign in, 404 gone, 503 retry).
        await super().prepare()
        if self.current_user is None:
            raise tornado.web.HTTPError(401, "sign in first")
        room_id = self.path_args[0]
        self.room = await self.rooms.get(room_id)
        since = self.get_query_argument("since", None)
        if since is not None:
            if not (since.isascii() and since.isdigit()):
                raise tornado.web.HTTPError(400, "since must be a non-negative integer")
            self._since = int(since)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, NotFound):
            status_code = 404
        elif isinstance(exc, Unavailable):
            status_code = 503
        self.set_status(status_code)
        self.finish({"error": self._reason})

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, Unavailable):
            log.warning("websocket handshake 503: %s", value)
        elif not isinstance(value, NotFound):
            super().log_exception(typ, value, tb)

    def check_origin(self, origin: str) -> bool:
        parsed = urlsplit(origin)
        if f"{parsed.scheme}://{parsed.netloc}".lower() in {o.lower() for o in self.config.allowed_origins}:
            return True
        # Same origin: the page that opened the socket came from this host.
        host = self.request.headers.get("Host", "")
        return parsed.netloc.lower() == host.lower()

    async def open(self, room_id: str) -> None:
        config = self.config
        self.set_nodelay(True)
        self.connection = RoomConnection(
            self,
            user=self.current_user,
            room=self.room,
            session_token=self.session_token or "",
            messages=self.messages,
            accounts=self.accounts,
            fanout=self.fanout,
            presence=self.presence,
            instance=config.instance,
            rate_limit=TokenBucket(config.rate_limit_burst, config.rate_limit_per_second),
            session_recheck_seconds=config.session_recheck_seconds,
        )
        self.settings["sockets"].add(self)
        try:
            await self.connection.open(self._since)
        except Unavailable as exc:
            log.warning("closing socket: cannot load room %s: %s", room_id, exc)
            self.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable; reconnect shortly")
        except Exception:
            log.exception("closing socket: opening room %s failed", room_id)
            self.close(CLOSE_INTERNAL_ERROR, "internal error; reconnect shortly")

    async def on_message(self, message: str | bytes) -> None:
        if self.connection is not None:
            await self.connection.receive(message)

    def on_close(self) -> None:
        self.settings["sockets"].discard(self)
        if self.connection is not None:
            task = asyncio.ensure_future(self.connection.close())
            task.add_done_callback(_log_failure)

    # -- Transport for RoomConnection -------------------------------------

    def send_text(self, text: str) -> None:
        if self._too_slow:
            return
        if self._unflushed_bytes > self.config.ws_max_buffer_bytes:
            self._close_too_slow()
            return
        data = text.encode("utf-8")
        try:
            future = self.write_message(data)  # a text frame: bytes are sent as they are
        except tornado.websocket.WebSocketClosedError:
            return
        self._unflushed_bytes += len(data)
        future.add_done_callback(functools.partial(self._flushed, len(data)))

    def _flushed(self, size: int, future: "asyncio.Future[None]") -> None:
        # Written to the socket, or failed because the stream closed: either
        # way Tornado no longer holds the bytes.
        self._unflushed_bytes -= size
        _ignore_closed(future)

    def _close_too_slow(self) -> None:
        # Everything the client misses is in storage: it reconnects and
        # resumes with `since`, and the room does not wait for it meanwhile.
        # The backlog is dropped when Tornado gives up on the close handshake.
        self._too_slow = True
        log.warning("closing the socket of %s in room %s: too slow, %d bytes not yet sent (cap %d)",
                    self.current_user.username, self.room.id, self._unflushed_bytes,
                    self.config.ws_max_buffer_bytes)
        self.close(CLOSE_TRY_AGAIN_LATER, "too slow: reconnect and resume with since")
