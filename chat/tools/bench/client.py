"""The load generator: many WebSockets in one process, built on picows.

A worker process holds a share of the bench's sockets. It connects them,
then, when told to, makes the room senders among them send (at a fixed rate,
or keeping a window of messages in flight) while every socket counts the
``message`` frames it receives. A message's body is the sender's
``time.monotonic_ns()``; CLOCK_MONOTONIC is one clock for every process on
the machine, so any receiver can tell how long delivery took without asking
the sender.

Frames are recognised by their first bytes and the body found by a byte
search: parsing JSON for every delivery would make the client, not the
server, the bottleneck.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from picows import WSListener, WSMsgType, WSTransport, ws_connect

MESSAGE_PREFIX = b'{"type":"message"'
ACK_PREFIX = b'{"type":"ack"'
ERROR_PREFIX = b'{"type":"error"'
BODY_MARKER = b'"body":"b'
CLIENT_ID_MARKER = b'"client_id":"'
SEQ_MARKER = b'"seq":'


@dataclass(frozen=True)
class SocketPlan:
    """One socket the bench opens: where, as whom, and whether it sends."""

    url: str
    cookie: str
    origin: str
    sender: bool


@dataclass
class WorkerResult:
    """What one worker measured; merged by the parent."""

    connected: int = 0
    connect_failures: int = 0
    connect_seconds: float = 0.0
    sent: int = 0
    acked: int = 0
    deliveries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    disconnects: int = 0
    # Milliseconds, one sample per delivery / per ack, in a compact array.
    delivery_ms: array[float] = field(default_factory=lambda: array("f"))
    ack_ms: array[float] = field(default_factory=lambda: array("f"))
    cpu_seconds: float = 0.0


def _between(payload: bytes, marker: bytes, end: bytes) -> bytes | None:
    start = payload.find(marker)
    if start < 0:
        return None
    start += len(marker)
    stop = payload.find(end, start)
    return payload[start:stop] if stop >= 0 else None


class Worker:
    """Runs inside a worker process: owns its sockets and its counters."""

    def __init__(self, plans: list[SocketPlan]) -> None:
        self.plans = plans
        self.result = WorkerResult()
        self.measuring = False
        self.senders: list[BenchSocket] = []
        self.sockets: list[BenchSocket] = []
        self._ids = itertools.count()
        self._prefix = f"w{os.getpid()}-"

    def next_client_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    async def connect(self, concurrency: int) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def open_one(plan: SocketPlan) -> None:
            async with gate:
                try:
                    _, listener = await ws_connect(
                        lambda: BenchSocket(self),
                        plan.url,
                        extra_headers={"Cookie": plan.cookie, "Origin": plan.origin},
                        websocket_handshake_timeout=60,
                        max_frame_size=64 * 1024 * 1024,
                    )
                except Exception:
                    self.result.connect_failures += 1
                    return
            assert isinstance(listener, BenchSocket)
            self.sockets.append(listener)
            if plan.sender:
                self.senders.append(listener)

        await asyncio.gather(*(open_one(plan) for plan in self.plans))
        self.result.connected = len(self.sockets)
        self.result.connect_seconds = time.monotonic() - started

    async def run_rate(self, messages_per_second: float, seconds: float) -> None:
        """Send ``messages_per_second`` in all from this worker's senders, evenly."""
        if not self.senders or messages_per_second <= 0:
            await asyncio.sleep(seconds)
            return
        started = time.monotonic()
        due = 0
        turn = itertools.cycle(self.senders)
        while (elapsed := time.monotonic() - started) < seconds:
            owed = int(elapsed * messages_per_second) - due
            for _ in range(owed):
                next(turn).send()
            due += max(owed, 0)
            await asyncio.sleep(0.001)

    async def run_window(self, window: int, seconds: float) -> None:
        """Each sender keeps ``window`` messages unacked until time is up."""
        for sender in self.senders:
            sender.window = window
            for _ in range(window):
                sender.send()
        await asyncio.sleep(seconds)
        for sender in self.senders:
            sender.window = 0

    def close(self) -> None:
        for socket in self.sockets:
            if socket.transport is not None:
                socket.transport.disconnect()


class BenchSocket(WSListener):
    """One socket: counts deliveries; a sender also sends and times acks."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker
        self.transport: WSTransport | None = None
        self.in_flight: dict[bytes, int] = {}
        self.window = 0

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: Any) -> None:
        if self.worker.measuring:
            self.worker.result.disconnects += 1

    def send(self) -> None:
        if self.transport is None or self.transport.is_disconnected:
            return
        client_id = self.worker.next_client_id()
        now = time.monotonic_ns()
        self.in_flight[client_id.encode()] = now
        self.transport.send(
            WSMsgType.TEXT, b'{"type":"send","client_id":"%s","body":"b%d"}' % (client_id.encode(), now)
        )
        self.worker.result.sent += 1

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        payload: bytes = frame.get_payload_as_bytes()
        result = self.worker.result
        if payload.startswith(MESSAGE_PREFIX):
            if not self.worker.measuring:
                return
            body = _between(payload, BODY_MARKER, b'"')
            if body is None or not body.isdigit():
                return  # somebody else's message, not the bench's
            result.deliveries += 1
            result.delivery_ms.append((time.monotonic_ns() - int(body)) / 1e6)
        elif payload.startswith(ACK_PREFIX):
            client_id = _between(payload, CLIENT_ID_MARKER, b'"')
            sent_at = self.in_flight.pop(client_id, None) if client_id else None
            if sent_at is None:
                return
            result.acked += 1
            result.ack_ms.append((time.monotonic_ns() - sent_at) / 1e6)
            if self.window:
                self.send()
        elif payload.startswith(ERROR_PREFIX):
            code = (_between(payload, b'"code":"', b'"') or b"?").decode()
            result.errors[code] = result.errors.get(code, 0) + 1
            client_id = _between(payload, CLIENT_ID_MARKER, b'"')
            if client_id is not None and self.in_flight.pop(client_id, None) is not None and self.window:
                self.send()  # keep the window full: refused sends are counted as errors


def worker_main(connection: Any, plans: list[SocketPlan], use_uvloop: bool) -> None:
    """Entry point of a worker process; talks to the parent over ``connection`` (a Pipe end)."""
    if use_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(_serve(connection, plans))


async def _serve(connection: Any, plans: list[SocketPlan]) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(plans)
    while True:
        command, args = await loop.run_in_executor(None, connection.recv)
        if command == "connect":
            await worker.connect(**args)
            connection.send(("connected", worker.result.connected, worker.result.connect_failures))
        elif command == "run":
            # Start together: the parent gives a moment on CLOCK_MONOTONIC.
            await asyncio.sleep(max(0.0, args["start_at"] - time.monotonic()))
            worker.result = WorkerResult(
                connected=worker.result.connected,
                connect_failures=worker.result.connect_failures,
                connect_seconds=worker.result.connect_seconds,
            )
            cpu_before = time.process_time()
            worker.measuring = True
            if args["window"]:
                await worker.run_window(args["window"], args["seconds"])
            else:
                await worker.run_rate(args["rate"], args["seconds"])
            # Let what is in flight arrive before the counts close: until
            # every send is answered (its deliveries were written before its
            # ack, or close to it), then a moment for the last deliveries.
            deadline = time.monotonic() + args["drain_seconds"]
            while any(s.in_flight for s in worker.senders) and time.monotonic() < deadline:  # noqa: ASYNC110 (a count, not an event)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            worker.measuring = False
            worker.result.cpu_seconds = time.process_time() - cpu_before
            connection.send(("result", worker.result))
        elif command == "close":
            worker.close()
            connection.send(("closed",))
            return
