"""A minimal browser for tests: cookies, XSRF tokens, forms and room WebSockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from devtools.webclient import DEFAULT_PASSWORD, WebClient

PASSWORD = DEFAULT_PASSWORD


class Browser(WebClient):
    """The site's web client, whose room sockets are test-friendly :class:`RoomSocket` s.

    It remembers every socket it opened, so the fixture that handed it out can
    close them all after the test, whether or not the test got that far.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.sockets: list[RoomSocket] = []

    async def socket(
        self, room_id: str, since: int | None = None, origin: str | None = None, cookie: str | None = None
    ) -> RoomSocket:
        sock = RoomSocket(await self.connect_socket(room_id, since=since, origin=origin, cookie=cookie))
        self.sockets.append(sock)
        return sock

    async def events(self) -> RoomSocket:
        """The person's event stream (its frames read like a room socket's)."""
        sock = RoomSocket(await self.connect_events())
        self.sockets.append(sock)
        return sock

    def close_sockets(self) -> None:
        """Close every socket this browser opened (closing one twice is harmless)."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


async def handshake_status(browser: Browser, room_id: str, **kwargs: Any) -> int:
    """The HTTP status a refused handshake gets (or 101 if it was accepted)."""
    try:
        sock = await browser.socket(room_id, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    sock.close()
    return 101


# Frames about who is in the room, not about its messages: they arrive whenever
# anyone comes or goes, so reads about messages pass them by.
NOTICES = frozenset({"presence", "membership"})


class RoomSocket:
    """A room socket whose reads skip notices (``presence``, ``membership``) unless asked for them.

    Notices arrive whenever anyone joins or leaves, so tests about messages
    read past them, and tests about presence or membership read only those.
    """

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self._buffer: list[dict[str, Any]] = []

    async def _next(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index, frame in enumerate(self._buffer):
                if wanted(frame):
                    return self._buffer.pop(index)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError()
            raw = await asyncio.wait_for(self.conn.read_message(), remaining)
            if raw is None:
                raise ConnectionError(f"socket closed: {self.conn.close_code} {self.conn.close_reason}")
            self._buffer.append(json.loads(raw))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame that is not a notice."""
        return await self._next(lambda frame: frame["type"] not in NOTICES, timeout)

    async def recv_presence(self, timeout: float = 10.0) -> list[str]:
        """The usernames in the next presence frame."""
        frame = await self._next(lambda frame: frame["type"] == "presence", timeout)
        return [user["username"] for user in frame["users"]]

    async def recv_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame that is not a notice, which must be of ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def skip_to(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Read (and drop) frames until one of ``kind`` (a notice too, if asked for); return it."""
        if kind in NOTICES:
            return await self._next(lambda frame: frame["type"] == kind, timeout)
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame}")

    async def join(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read hello and the first history frame."""
        return await self.recv_type("hello"), await self.recv_type("history")

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def send_message(self, body: str, client_id: str | None = None) -> str:
        client_id = client_id or uuid.uuid4().hex
        await self.send_json({"type": "send", "client_id": client_id, "body": body})
        return client_id

    async def acked(self, client_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Read (and drop) frames until the ack for ``client_id``; return its message."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == "ack" and frame["client_id"] == client_id:
                return frame["message"]

    async def answers(self, client_ids: list[str], timeout: float = 15.0) -> list[dict[str, Any]]:
        """The answer (ack or error frame) to each client_id, in the order given.

        Frames are read until every one is answered, in whatever order they
        come: a send refused at once (a rate limit) is answered before the
        acks of earlier sends still being stored.
        """
        found: dict[str, dict[str, Any]] = {}
        while len(found) < len(set(client_ids)):
            frame = await self.recv(timeout)
            if frame["type"] in ("ack", "error") and frame.get("client_id") in client_ids:
                found.setdefault(frame["client_id"], frame)
        return [found[client_id] for client_id in client_ids]

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket, reading past any frames; return the close code."""
        await self.frames_until_closed(timeout)
        return self.conn.close_code

    async def frames_until_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every frame the server sends until it closes the socket (within ``timeout``)."""
        frames = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await asyncio.wait_for(self.conn.read_message(), remaining)
            if message is None:
                return frames
            frames.append(json.loads(message))

    def close(self) -> None:
        self.conn.close()


# -- WebSockets by hand --------------------------------------------------------
#
# Tornado's client reads eagerly and answers pings by itself; tests about
# peers that stop reading or never answer need a socket whose every byte the
# test controls.

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


async def raw_websocket(
    base_url: str, room_id: str, cookie: str, rcvbuf: int | None = None, origin: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a room socket over plain TCP, doing the WebSocket handshake by hand.

    ``cookie`` is a ``Cookie`` header value (``Browser.cookie_header()``).
    ``rcvbuf`` shrinks the kernel receive buffer (set before connecting, so
    the TCP window is small from the start). Returns the streams positioned
    just after the ``101`` response; nothing more is read or answered unless
    the caller does it (see :func:`read_frame` and :func:`client_frame`).
    asyncio reads ahead into the StreamReader (up to 128 KiB) on its own:
    call ``writer.transport.pause_reading()`` for a peer that truly stops.
    ``origin`` is the site's own unless given, as from one of its pages.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 10)
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /rooms/{room_id}/ws HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Origin: {origin or f'{url.scheme}://{url.netloc}'}\r\n"
            f"Cookie: {cookie}\r\n"
            "\r\n"
        ).encode("latin-1")
    )
    await writer.drain()
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    if status_line.split(" ")[1:2] != ["101"]:
        writer.close()
        raise ConnectionError(f"handshake refused: {head!r}")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
    assert headers.get("sec-websocket-accept") == accept, head
    return reader, writer


async def raw_request(
    base_url: str, head: str, body: bytes = b"", source: str | None = None, read_for: float = 2.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` over plain TCP.

    For requests Tornado's client will not make (control characters in the
    path, a Content-Length the body does not have). Add ``Connection: close``
    to ``head`` unless the test wants otherwise. ``source`` is the local
    address to send from: ``127.0.0.2`` is another machine as far as a
    server trusting only ``127.0.0.1`` can tell.

    Returns the status, the headers (names lower-cased) and whatever body
    arrived before the server closed or ``read_for`` seconds passed (0: the
    body is not read). The connection is closed afterwards.
    """
    url = urlsplit(base_url)
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(url.hostname, url.port, local_addr=local)
    try:
        writer.write(head.rstrip("\r\n").encode("latin-1") + b"\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        rest = b""
        if read_for > 0:
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(read_for):
                    while chunk := await reader.read(1 << 16):
                        rest += chunk
    finally:
        writer.close()
    status_line, *header_lines = response.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    return int(status_line.split(" ")[1]), headers, rest


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one (unmasked, unfragmented) server frame: ``(opcode, payload)``.

    Raises ``asyncio.IncompleteReadError`` at the end of the stream.
    """
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def close_code(payload: bytes) -> tuple[int | None, str]:
    """The status code and reason in a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked client frame with a payload under 126 bytes (control frames, short texts)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


# The ``open_browser`` fixture: a Browser on any server, its sockets closed after the test.
OpenBrowser = Callable[[str], Browser]
