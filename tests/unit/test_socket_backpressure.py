"""The socket's sender caps the bytes queued for a client that stops reading.

The sender is built without a server: its ``write`` and ``close`` are
recorders whose futures the test completes, standing in for Tornado flushing
(or failing to flush) a frame to the network.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import tornado.websocket

from chat.web.socket import BoundedSender


class RecordingSocket:
    """A BoundedSender whose transport is in the test's hands."""

    def __init__(self, cap: int) -> None:
        self.handler = BoundedSender(self._write_message, self._close, cap, "alice in room r1")
        self.written: list[bytes] = []
        self.futures: list[asyncio.Future[None]] = []
        self.closes: list[tuple[int, str]] = []
        self.closed_stream = False

    def _write_message(self, message: bytes, binary: bool = False) -> asyncio.Future[None]:
        assert not binary
        if self.closed_stream:
            raise tornado.websocket.WebSocketClosedError()
        self.written.append(message)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def _close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    async def flush(self, index: int, error: BaseException | None = None) -> None:
        future = self.futures[index]
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        await asyncio.sleep(0)  # run the done-callbacks


async def test_frames_are_queued_as_utf8_text_and_flushing_frees_the_budget() -> None:
    sock = RecordingSocket(cap=4096)

    sock.handler.send_text("\u20ac" * 1000)  # 3000 bytes in UTF-8
    sock.handler.send_text("x" * 1000)
    assert sock.written == ["\u20ac".encode() * 1000, b"x" * 1000]
    assert sock.handler.unflushed_bytes == 4000

    await sock.flush(0)
    await sock.flush(1)
    assert sock.handler.unflushed_bytes == 0
    assert sock.closes == []


async def test_once_more_than_the_cap_waits_the_socket_is_closed_with_1013_and_gets_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock = RecordingSocket(cap=4096)
    caplog.set_level(logging.WARNING, logger="chat.web.socket")

    for _ in range(5):
        sock.handler.send_text("y" * 1000)  # the fifth goes over the cap: still queued
    assert len(sock.written) == 5 and sock.closes == []

    sock.handler.send_text("z")  # over the cap already: not queued, the client is cut off
    sock.handler.send_text("z")
    await sock.flush(0)
    sock.handler.send_text("z")  # room again, but the socket is closing

    assert len(sock.written) == 5
    assert len(sock.closes) == 1
    code, reason = sock.closes[0]
    assert code == 1013 and "too slow" in reason and "since" in reason
    warnings = [r for r in caplog.records if "too slow" in r.getMessage()]
    assert len(warnings) == 1
    assert "alice" in warnings[0].getMessage() and "r1" in warnings[0].getMessage()


async def test_a_failed_write_releases_its_bytes_and_a_closed_socket_is_ignored() -> None:
    sock = RecordingSocket(cap=4096)

    sock.handler.send_text("a" * 100)
    await sock.flush(0, tornado.websocket.WebSocketClosedError())
    assert sock.handler.unflushed_bytes == 0

    sock.closed_stream = True
    sock.handler.send_text("b" * 100)  # raises inside; swallowed
    assert sock.handler.unflushed_bytes == 0 and sock.closes == []
