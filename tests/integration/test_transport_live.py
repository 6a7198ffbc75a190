"""The socket transport on a real Tornado server and a real client, over loopback.

Frames written straight to the kernel, the rest left to Tornado's stream when
the kernel's buffer is full (a client that reads late), and Tornado's own
frames (the close) after ours: the client must read every frame whole and in
order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from chat.web.transport import SocketTransport, TornadoSink, WriteBatcher
from chat.wire.server import Outbound

FRAMES = 400
# Big enough that the kernel's socket buffers fill long before the end.
PAYLOAD = "x" * 20_000


class Burst(tornado.websocket.WebSocketHandler):
    def open(self, *args: str, **kwargs: str) -> None:
        batch = self.get_query_argument("batch") == "1"
        transport = SocketTransport(
            TornadoSink(self), 64 * 1024 * 1024, "test", batcher=WriteBatcher() if batch else None
        )
        shared = Outbound(PAYLOAD)
        for i in range(FRAMES):
            transport.send_text(f"{i}:") if i % 2 else transport.send_shared(shared)
        transport.close(1000, "done")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    sock, number = bind_unused_port()
    server = HTTPServer(tornado.web.Application([(r"/burst", Burst)]))
    server.add_sockets([sock])
    yield number
    server.stop()


@pytest.mark.parametrize("batch", ["0", "1"])
async def test_a_burst_larger_than_the_kernel_buffers_arrives_whole_and_in_order(port: int, batch: str) -> None:
    client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/burst?batch={batch}")
    await asyncio.sleep(0.5)  # read late: the server's sends hit a full buffer
    received = []
    while (message := await client.read_message()) is not None:
        received.append(message)

    assert received == [f"{i}:" if i % 2 else PAYLOAD for i in range(FRAMES)]
    assert client.close_code == 1000
