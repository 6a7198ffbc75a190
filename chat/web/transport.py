"""How frames reach one WebSocket: built once, batched per loop turn, capped per client.

A room's message goes to every socket of the room in this process as the same
bytes: server frames are unmasked and compression is off, so the whole frame
(header and payload) is built once, by the first socket's transport, and
every other socket writes those bytes to its stream. Tornado's
``write_message`` would frame it again for each socket and wrap each write in
a task of its own.

Under load many frames reach a socket in one turn of the event loop (a burst
of messages, an ack and its message); they are joined and written with one
call when the turn ends, so a busy room costs one write per socket per turn,
not one per frame.

Each was once a setting the bench measured on and off (docs/benchmarks.md,
"The levers"): built once, 5.3 times the deliveries of a frame framed per
socket; batched, twice that again. Neither earns an off switch any more.

The cap: bytes handed to the stream but not yet written to the network are
counted; past ``cap`` the client stopped reading, or reads slower than the
room talks, so the socket is closed with 1013 and the client resumes from
storage with ``since`` instead of growing our memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from typing import Protocol

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .. import metrics
from ..wire.refusals import Close
from ..wire.server import Outbound

log = logging.getLogger(__name__)

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def text_frame(payload: bytes) -> bytes:
    """A whole unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _FIN_TEXT, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload


class Sink(Protocol):
    """The socket under a transport (Tornado's, or a test's)."""

    def write_frame(self, frame: bytes) -> asyncio.Future[None] | None:
        """Write bytes that are already whole frames; raises WebSocketClosedError once closed.

        Returns None if the bytes are already on the network, else a future
        that resolves once they are.
        """

    def close(self, code: int, reason: str) -> None: ...


class TornadoSink:
    """A live Tornado WebSocketHandler as a Sink."""

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler = handler

    def write_frame(self, frame: bytes) -> asyncio.Future[None] | None:
        connection = self._handler.ws_connection
        if connection is None or connection.is_closing():
            raise WebSocketClosedError()
        # The protocol object's stream; Tornado writes its own frames (pings,
        # close) to it the same way, whole frames at a time, so ours never
        # interleave with them mid-frame.
        stream = connection.stream
        if stream is None:
            raise WebSocketClosedError()
        if type(stream) is IOStream and not stream.writing() and not stream.closed():
            # Nothing of Tornado's is waiting to be written, so the bytes can
            # go straight to the kernel: one send(), no future, no callbacks.
            # This is what IOStream.write does first too; what the kernel does
            # not take (a slow reader), or an error, is left to the stream.
            # (Plain sockets only: TLS streams must encrypt.)
            try:
                sent = stream.socket.send(frame)
            except OSError:
                sent = 0  # EAGAIN, or an error the stream's own write will report
            if sent == len(frame):
                return None
            frame = frame[sent:]
        try:
            future: asyncio.Future[None] = stream.write(frame)
        except StreamClosedError as exc:
            raise WebSocketClosedError() from exc
        return future

    def close(self, code: int, reason: str) -> None:
        self._handler.close(code, reason)


class WriteBatcher:
    """Flushes every transport that queued frames during this turn of the event loop, once, at its end."""

    def __init__(self) -> None:
        self._due: list[SocketTransport] = []

    def add(self, transport: SocketTransport) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._flush)
        self._due.append(transport)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for transport in due:
            try:
                transport.flush()
            except Exception:
                log.exception("flushing frames to %s failed", transport.who)


class SocketTransport:
    """The transport of one socket (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        cap: int,
        who: str,
        batcher: WriteBatcher | None = None,
    ) -> None:
        self._sink = sink
        self.cap = cap
        self.who = who  # for the log: "alice in room r1"
        # None: written at once (a test's transport); a server batches per loop turn.
        self._batcher = batcher
        self._queued: list[bytes] = []
        self.unflushed_bytes = 0
        self.too_slow = False
        self.closed = False

    # -- what the connection calls ----------------------------------------

    def send_text(self, text: str) -> None:
        self._queue(text_frame(text.encode("utf-8")))

    def send_shared(self, frame: Outbound) -> None:
        encoded = frame.encoded
        if encoded is None:
            encoded = frame.encoded = text_frame(frame.text.encode("utf-8"))
        self._queue(encoded)

    def close(self, code: int, reason: str) -> None:
        # What this turn queued goes out before the close frame, never after.
        self.flush()
        self.closed = True
        self._sink.close(code, reason)

    # -- writing ------------------------------------------------------------

    def _admit(self) -> bool:
        if self.too_slow or self.closed:
            return False
        if self.unflushed_bytes > self.cap:
            self._cut_off()
            return False
        return True

    def _queue(self, frame: bytes) -> None:
        if not self._admit():
            return
        if self._batcher is None:
            self._write(frame)
            return
        if not self._queued:
            self._batcher.add(self)
        self._queued.append(frame)

    def flush(self) -> None:
        """Write what this turn queued, in one call."""
        if not self._queued:
            return
        frames, self._queued = self._queued, []
        if not self.closed:
            self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _write(self, data: bytes) -> None:
        # Only bytes the stream holds count against the cap: what this turn
        # queued is not yet the client's fault (a burst of acks and messages
        # after a group commit can be large; the kernel usually takes it all).
        try:
            future = self._sink.write_frame(data)
        except WebSocketClosedError:
            return
        if future is not None:  # the kernel did not take it all: the stream holds the rest
            self.unflushed_bytes += len(data)
            future.add_done_callback(functools.partial(self._flushed, len(data)))

    def _flushed(self, size: int, future: asyncio.Future[None]) -> None:
        # Written to the socket, or failed because the stream closed: either
        # way Tornado no longer holds the bytes. A failure needs no handling
        # here (on_close cleans up), only retrieving so asyncio does not warn.
        self.unflushed_bytes -= size
        if not future.cancelled():
            future.exception()

    def _cut_off(self) -> None:
        # Everything the client misses is in storage: it reconnects and
        # resumes with `since`, and the room does not wait for it meanwhile.
        # The backlog is dropped when Tornado gives up on the close handshake.
        self.too_slow = True
        metrics.SLOW_CONSUMERS.inc()
        self._queued.clear()  # nothing more for a client that does not read
        log.warning(
            "closing the socket of %s: too slow, %d bytes not yet sent (cap %d)",
            self.who,
            self.unflushed_bytes,
            self.cap,
        )
        self.closed = True
        self._sink.close(Close.TRY_AGAIN_LATER, "too slow: reconnect and resume with since")
