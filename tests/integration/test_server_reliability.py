"""Peers that stop reading or stop answering, against a real server process.

A client that stops reading is closed with 1013 once more than
``CHAT_WS_MAX_BUFFER_BYTES`` wait for it, and one that stops answering pings
is dropped after ``CHAT_WS_PING_INTERVAL`` + ``CHAT_WS_PING_TIMEOUT``; in both
cases everyone else in the room carries on. The misbehaving peers are raw TCP
sockets (``raw_websocket``), since Tornado's client reads eagerly and answers
pings by itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from tests.support.client import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Browser,
    RoomSocket,
    client_frame,
    close_code,
    raw_websocket,
    read_frame,
)
from tests.support.server import ChildServerFactory, Server
from tests.support.waiting import eventually

SLOW_WARNING = "too slow"


def kernel_send_buffer_ceiling() -> int:
    """The most a TCP socket's send buffer autotunes to (about 3 MB on loopback with Linux defaults).

    The kernel absorbs that much for a peer that stops reading before any
    byte waits in Tornado, so a slow-consumer test must send more than it.
    """
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


async def two_users_in_a_room(
    server: Server, open_browser: Callable[[str], Browser]
) -> tuple[Browser, Browser, str, str]:
    """Alice and Bob, signed in, and a room of Alice's; returns Bob's username last."""
    alice, bob = open_browser(server.base_url), open_browser(server.base_url)
    await alice.register()
    bob_name = await bob.register()
    return alice, bob, await alice.create_room(), bob_name


def assert_healthy(server: Server) -> None:
    assert server.running, "the server died"
    with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=5) as response:
        assert response.status == 200


async def drain_once_cut_off(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[list[dict[str, Any]], int | None, str]:
    """Wait for the slow-consumer warning, then read what the server had queued.

    Returns the text frames that made it out before the close frame, and the
    close code and reason. Must start within the 5 s Tornado waits for the
    close handshake, after which it drops the backlog with the connection.
    """
    await eventually(lambda: SLOW_WARNING in server.logs(), 15, f"{SLOW_WARNING!r} in the server log", interval=0.05)
    cast(asyncio.Transport, writer.transport).resume_reading()
    frames: list[dict[str, Any]] = []
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        if opcode == OP_TEXT:
            frames.append(json.loads(payload))
        elif opcode == OP_CLOSE:
            code, reason = close_code(payload)
            break
    # Complete the close handshake; the server then ends the TCP connection.
    writer.write(client_frame(OP_CLOSE, struct.pack("!H", code or 1000)))
    assert await asyncio.wait_for(reader.read(), 5) == b"", "data after the close frame"
    writer.close()
    return frames, code, reason


Close = tuple[int | None, str]


async def read_until_dropped(
    reader: asyncio.StreamReader, timeout: float = 12
) -> tuple[int, Close | None, float | None, float]:
    """Read everything and answer nothing (no pong, no close) until the server drops the connection.

    Returns the pings seen, the close frame's code and reason, and the seconds
    until the close frame and until the end of the stream.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    pings = 0
    close: Close | None = None
    closed_after: float | None = None
    while True:
        try:
            opcode, payload = await asyncio.wait_for(read_frame(reader), started + timeout - loop.time())
        except asyncio.IncompleteReadError:
            return pings, close, closed_after, loop.time() - started
        if opcode == OP_PING:
            pings += 1
        elif opcode == OP_CLOSE and close is None:
            close, closed_after = close_code(payload), loop.time() - started


async def read_messages(sock: RoomSocket, count: int) -> tuple[list[dict[str, Any]], int]:
    """Read until ``count`` message frames arrived, each within 5 s; return them and the acks seen."""
    messages: list[dict[str, Any]] = []
    acks = 0
    while len(messages) < count:
        frame = await sock.recv(timeout=5)
        if frame["type"] == "ack":
            acks += 1
        else:
            assert frame["type"] == "message", frame
            messages.append(frame["message"])
    return messages, acks


async def test_a_client_that_stops_reading_is_closed_with_1013_while_the_room_keeps_flowing(
    server_factory: Callable[..., Server],
    open_browser: Callable[[str], Browser],
) -> None:
    server = server_factory(CHAT_WS_MAX_BUFFER_BYTES="65536")
    alice, bob, room_id, bob_name = await two_users_in_a_room(server, open_browser)
    # Bob's tab hangs: a tiny TCP window, and nothing read after the handshake.
    reader, writer = await raw_websocket(server.base_url, room_id, bob.cookie_header(), rcvbuf=4096)
    cast(asyncio.Transport, writer.transport).pause_reading()
    slow = asyncio.ensure_future(drain_once_cut_off(server, reader, writer))
    healthy = await alice.socket(room_id)
    await healthy.join()

    # More broadcasts than the kernel buffers on both ends, plus the cap, can
    # hold: ~12 KB each (3-byte characters), 5 MB or so in all.
    filler = "\u20ac" * 3500
    frame_bytes = len(filler.encode()) + 400
    count = math.ceil((kernel_send_buffer_ceiling() + 1024 * 1024) / frame_bytes)
    bodies = [f"{i:04d} " + filler for i in range(count)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Alice reads while she sends, as a browser does (an unread Tornado
    # client socket is itself a slow consumer).
    reading = asyncio.ensure_future(read_messages(healthy, len(bodies)))
    for body in bodies:
        await healthy.send_message(body)
    received, acks = await reading
    elapsed = loop.time() - started

    assert [m["body"] for m in received] == bodies
    seqs = [m["seq"] for m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(bodies)
    assert elapsed < 15, f"the room slowed down: {elapsed:.1f}s for {len(bodies)} messages"

    frames, code, reason = await asyncio.wait_for(slow, 20)
    assert code == 1013, (code, reason)
    assert "too slow" in reason and "since" in reason
    # What did reach the slow client is the start of the same ordered stream.
    assert [f["type"] for f in frames[:2]] == ["hello", "history"]
    got = [f["message"]["body"] for f in frames if f["type"] == "message"]
    assert 0 < len(got) < len(bodies) and got == bodies[: len(got)]

    log = server.logs()
    warnings = [line for line in log.splitlines() if SLOW_WARNING in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0] and bob_name in warnings[0] and room_id in warnings[0]
    assert "Traceback" not in log

    # The healthy client is still connected and served.
    client_id = await healthy.send_message("after the slow one left")
    assert (await healthy.acked(client_id, timeout=5))["body"] == "after the slow one left"
    assert acks == len(bodies)
    assert_healthy(server)


async def test_a_peer_that_never_answers_pings_is_dropped_while_a_responsive_one_stays(
    server_factory: Callable[..., Server],
    open_browser: Callable[[str], Browser],
) -> None:
    server = server_factory(CHAT_WS_PING_INTERVAL="0.5", CHAT_WS_PING_TIMEOUT="1")
    alice, bob, room_id, _ = await two_users_in_a_room(server, open_browser)
    reader, writer = await raw_websocket(server.base_url, room_id, bob.cookie_header())
    healthy = await alice.socket(room_id)  # Tornado's client answers pings by itself
    await healthy.join()

    raw = asyncio.ensure_future(read_until_dropped(reader))
    # Keep reading, as a browser does: Tornado's client stops processing
    # frames, pings included, while a read frame waits for the application.
    while not raw.done():
        await healthy.expect_silence(0.2)
    pings, close, closed_after, dropped_after = raw.result()
    writer.close()

    assert pings >= 1
    # A ping after 0.5 s, no pong within the timeout: closed within ~1.5 s...
    assert closed_after is not None and closed_after < 4, (closed_after, close)
    # ...and the TCP connection ended once the close handshake timed out (5 s).
    assert dropped_after < 10, dropped_after

    assert healthy.conn.close_code is None
    client_id = await healthy.send_message("still here")
    assert (await healthy.acked(client_id, timeout=5))["body"] == "still here"
    assert_healthy(server)


async def test_sigterm_closes_sockets_with_1001_finishes_and_exits_cleanly(
    child_server_factory: ChildServerFactory,
    open_browser: Callable[[str], Browser],
) -> None:
    import signal

    server = child_server_factory()  # the process and its signal handling are the subject
    alice, _, room_id, _ = await two_users_in_a_room(server, open_browser)
    sock = await alice.socket(room_id)
    await sock.join()
    await sock.acked(await sock.send_message("before the shutdown"))

    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert await sock.closed() == 1001  # "going away": reconnect elsewhere
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert "shut down" in server.logs() and "Traceback" not in server.logs()
