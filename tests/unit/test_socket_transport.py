"""A socket's transport: frames built once per room, batched per loop turn, capped per client.

The transport is built without a server: its sink records what it is asked to
write and hands out futures the test completes, standing in for Tornado
flushing (or failing to flush) bytes to the network.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import tornado.websocket
from tornado.websocket import WebSocketProtocol13

from chat.web.transport import SocketTransport, WriteBatcher, text_frame
from chat.wire.server import Outbound


class RecordingSink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []  # write_frame calls: whole frames, maybe several joined
        self.futures: list[asyncio.Future[None]] = []
        self.closes: list[tuple[int, str]] = []
        self.closed_stream = False

    def _future(self) -> asyncio.Future[None]:
        if self.closed_stream:
            raise tornado.websocket.WebSocketClosedError()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def write_frame(self, frame: bytes) -> asyncio.Future[None]:
        future = self._future()
        self.frames.append(frame)
        return future

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    async def flush(self, index: int, error: BaseException | None = None) -> None:
        future = self.futures[index]
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        await asyncio.sleep(0)  # run the done-callbacks


def transport(cap: int = 4096, *, batch: bool = False) -> tuple[SocketTransport, RecordingSink]:
    sink = RecordingSink()
    return SocketTransport(sink, cap, "alice in room r1", batcher=WriteBatcher() if batch else None), sink


def decode(data: bytes) -> list[str]:
    """Split server frames the way a client reads them (unmasked text frames only)."""
    texts = []
    while data:
        assert data[0] == 0x81  # FIN + text
        size, start = data[1], 2
        if size == 126:
            size, start = int.from_bytes(data[2:4]), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10]), 10
        texts.append(data[start : start + size].decode())
        data = data[start + size :]
    return texts


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_frames_are_framed_as_rfc_6455_says_at_every_length_boundary(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert decode(frame) == [payload.decode()]
    # Tornado's own framing (server side: unmasked) gives the same bytes.
    written: list[bytes] = []

    class Stream:
        def write(self, data: bytes) -> None:
            written.append(data)

    protocol = WebSocketProtocol13.__new__(WebSocketProtocol13)
    protocol.mask_outgoing = False
    protocol.stream = Stream()  # type: ignore[assignment]
    protocol._wire_bytes_out = 0
    protocol._write_frame(True, 0x1, payload)
    assert written == [frame]


async def test_a_shared_frame_is_built_once_and_every_socket_writes_the_same_bytes() -> None:
    frame = Outbound('{"type":"message","body":"\u20ac"}')
    first, first_sink = transport()
    second, second_sink = transport()

    first.send_shared(frame)
    built = frame.encoded
    second.send_shared(frame)

    assert built is not None and frame.encoded is built
    assert first_sink.frames == [built] and second_sink.frames[0] is built
    assert decode(built) == [frame.text]


async def test_frames_queued_in_one_loop_turn_go_out_in_one_write_in_order() -> None:
    sock, sink = transport(batch=True)

    sock.send_text("hello")
    sock.send_shared(Outbound("one"))
    sock.send_shared(Outbound("two"))
    assert sink.frames == []  # not before the turn ends

    await asyncio.sleep(0)
    assert len(sink.frames) == 1
    assert decode(sink.frames[0]) == ["hello", "one", "two"]

    sock.send_text("three")
    await asyncio.sleep(0)
    assert [decode(f) for f in sink.frames] == [["hello", "one", "two"], ["three"]]


async def test_closing_sends_what_was_queued_first_and_nothing_after() -> None:
    sock, sink = transport(batch=True)
    sock.send_text("last words")
    sock.close(1001, "going away")
    sock.send_text("too late")
    await asyncio.sleep(0)

    assert [decode(f) for f in sink.frames] == [["last words"]]
    assert sink.closes == [(1001, "going away")]


@pytest.mark.parametrize("batch", [False, True])
async def test_flushing_frees_the_budget(batch: bool) -> None:
    sock, sink = transport(batch=batch)

    sock.send_text("\u20ac" * 1000)  # 3000 bytes in UTF-8, plus a 4-byte header
    sock.send_text("x" * 1000)
    await asyncio.sleep(0)
    assert sock.unflushed_bytes == 4008

    for index in range(len(sink.futures)):
        await sink.flush(index)
    assert sock.unflushed_bytes == 0
    assert sink.closes == []


@pytest.mark.parametrize("batch", [False, True])
async def test_once_more_than_the_cap_waits_the_socket_is_closed_with_1013_and_gets_nothing_more(
    batch: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sock, sink = transport(cap=4096, batch=batch)
    caplog.set_level(logging.WARNING, logger="chat.web.transport")

    for _ in range(5):
        sock.send_text("y" * 1000)  # the fifth goes over the cap: still queued
        await asyncio.sleep(0)
    assert sum(len(decode(f)) for f in sink.frames) == 5 and sink.closes == []

    sock.send_text("z")  # over the cap already: not queued, the client is cut off
    sock.send_text("z")
    await sink.flush(0)
    sock.send_text("z")  # room again, but the socket is closing
    await asyncio.sleep(0)

    assert sum(len(decode(f)) for f in sink.frames) == 5
    assert len(sink.closes) == 1
    code, reason = sink.closes[0]
    assert code == 1013 and "too slow" in reason and "since" in reason
    warnings = [r for r in caplog.records if "too slow" in r.getMessage()]
    assert len(warnings) == 1
    assert "alice" in warnings[0].getMessage() and "r1" in warnings[0].getMessage()


async def test_a_failed_write_releases_its_bytes_and_a_closed_socket_is_ignored() -> None:
    sock, sink = transport()

    sock.send_text("a" * 100)
    await sink.flush(0, tornado.websocket.WebSocketClosedError())
    assert sock.unflushed_bytes == 0

    sink.closed_stream = True
    sock.send_text("b" * 100)  # raises inside; swallowed
    assert sock.unflushed_bytes == 0 and sink.closes == []
