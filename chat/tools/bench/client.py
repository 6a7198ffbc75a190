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

With ``reconnect`` on (the restart scenario), a socket that drops comes back
the way the browser's does: backoff with full jitter, ``since`` the last seq
it holds, and its unacknowledged sends sent again with their client_ids. Each
socket checks its own stream: seqs in order, none twice, no hole.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from picows import WSListener, WSMsgType, WSTransport, ws_connect

MESSAGE_PREFIX = b'{"type":"message"'
ACK_PREFIX = b'{"type":"ack"'
ERROR_PREFIX = b'{"type":"error"'
HISTORY_PREFIX = b'{"type":"history"'
HELLO_PREFIX = b'{"type":"hello"'
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
    room_id: str = ""


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
    # The restart scenario: how each dropped socket came back, and what it holds.
    resumed: int = 0
    resume_ms: array[float] = field(default_factory=lambda: array("f"))
    # Seconds on CLOCK_MONOTONIC: the first drop and the last resume seen.
    first_drop: float | None = None
    last_resume: float | None = None
    gaps: int = 0
    duplicates: int = 0
    resets: int = 0
    unacked: int = 0
    still_down: int = 0
    # room id -> the last seq each of this worker's sockets in it holds
    last_seqs: dict[str, list[int]] = field(default_factory=dict)


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
        # Bring dropped sockets back (the restart scenario); off while closing.
        self.reconnect = False
        self.members = [Member(self, plan) for plan in plans]
        self.senders = [member for member in self.members if member.plan.sender]
        self._ids = itertools.count()
        self._prefix = f"w{os.getpid()}-"

    def next_client_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    async def connect(self, concurrency: int) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def open_one(member: Member) -> None:
            async with gate:
                if not await member.open():
                    self.result.connect_failures += 1

        await asyncio.gather(*(open_one(member) for member in self.members))
        self.result.connected = sum(member.socket is not None for member in self.members)
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

    def settled(self) -> bool:
        """Every send answered, and (reconnecting) every socket back and as far as its room has got."""
        if any(sender.in_flight for sender in self.senders):
            return False
        if not self.reconnect:
            return True
        if any(member.socket is None for member in self.members):
            return False
        furthest: dict[str, int] = {}
        for member in self.members:
            room = member.plan.room_id
            furthest[room] = max(furthest.get(room, 0), member.last_seq, member.acked_seq)
        return all(member.last_seq >= furthest[member.plan.room_id] for member in self.members)

    def account(self) -> None:
        """Fill in what the sockets hold at the end (the restart scenario's checks)."""
        result = self.result
        for member in self.members:
            result.gaps += member.gaps
            result.duplicates += member.duplicates
            result.resets += member.resets
            result.unacked += len(member.in_flight)
            result.still_down += member.socket is None
            result.last_seqs.setdefault(member.plan.room_id, []).append(member.last_seq)

    def close(self) -> None:
        self.reconnect = False
        for member in self.members:
            if member.socket is not None and member.socket.transport is not None:
                member.socket.transport.disconnect()


class Member:
    """One planned socket, across reconnects: what it holds and what it still owes."""

    def __init__(self, worker: Worker, plan: SocketPlan) -> None:
        self.worker = worker
        self.plan = plan
        self.socket: BenchSocket | None = None
        # client_id -> the monotonic ns it was first sent at (sent again, same id, after a reconnect)
        self.in_flight: dict[bytes, int] = {}
        self.window = 0
        self.last_seq = 0
        # The highest seq acknowledged to this socket (a sender's): the room has at least that many.
        self.acked_seq = 0
        self.gaps = 0
        self.duplicates = 0
        self.resets = 0
        self.attempt = 0
        self.dropped_at: float | None = None

    async def open(self) -> bool:
        url = self.plan.url + (f"?since={self.last_seq}" if self.last_seq else "")
        try:
            _, listener = await ws_connect(
                lambda: BenchSocket(self),
                url,
                extra_headers={"Cookie": self.plan.cookie, "Origin": self.plan.origin},
                websocket_handshake_timeout=60,
                max_frame_size=64 * 1024 * 1024,
            )
        except Exception:
            return False
        assert isinstance(listener, BenchSocket)
        return True

    def dropped(self) -> None:
        self.socket = None
        worker = self.worker
        if worker.measuring:
            worker.result.disconnects += 1
        if not worker.reconnect:
            return
        now = time.monotonic()
        if self.dropped_at is None:
            self.dropped_at = now
            if worker.result.first_drop is None or now < worker.result.first_drop:
                worker.result.first_drop = now
        asyncio.get_running_loop().call_later(self._backoff(), lambda: asyncio.ensure_future(self._come_back()))

    def _backoff(self) -> float:
        # static/chat.js: full jitter under 0.5 s * 2^(attempt - 1), at most 30 s.
        self.attempt += 1
        return random.random() * min(30.0, 0.5 * 2.0 ** (self.attempt - 1))

    async def _come_back(self) -> None:
        if self.worker.reconnect and self.socket is None and not await self.open():
            asyncio.get_running_loop().call_later(self._backoff(), lambda: asyncio.ensure_future(self._come_back()))

    def greeted(self) -> None:
        """hello: resend what was not acked, in order, with the same client_ids."""
        for client_id, sent_at in self.in_flight.items():
            self._write(client_id, sent_at)

    def caught_up(self) -> None:
        """The history after a reconnect arrived: this socket is back."""
        self.attempt = 0
        if self.dropped_at is None:
            return
        now = time.monotonic()
        result = self.worker.result
        result.resumed += 1
        result.resume_ms.append((now - self.dropped_at) * 1000)
        result.last_resume = max(result.last_resume or now, now)
        self.dropped_at = None

    def see(self, seq: int) -> None:
        if seq <= self.last_seq:
            self.duplicates += 1
            return
        if self.last_seq and seq != self.last_seq + 1:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = seq

    def send(self) -> None:
        client_id = self.worker.next_client_id().encode()
        sent_at = time.monotonic_ns()
        self.in_flight[client_id] = sent_at
        self.worker.result.sent += 1
        self._write(client_id, sent_at)

    def _write(self, client_id: bytes, sent_at: int) -> None:
        socket = self.socket
        if socket is None or socket.transport is None or socket.transport.is_disconnected:
            return  # sent again after the reconnect's hello
        socket.transport.send(WSMsgType.TEXT, b'{"type":"send","client_id":"%s","body":"b%d"}' % (client_id, sent_at))


def _seqs(payload: bytes) -> list[int]:
    """Every message seq in a frame, in order (a byte search, as for bodies)."""
    found = []
    at = payload.find(SEQ_MARKER)
    while at >= 0:
        start = at + len(SEQ_MARKER)
        stop = start
        while stop < len(payload) and 48 <= payload[stop] <= 57:
            stop += 1
        found.append(int(payload[start:stop]))
        at = payload.find(SEQ_MARKER, stop)
    return found


class BenchSocket(WSListener):
    """One connection of a member: counts deliveries; a sender's also times acks."""

    def __init__(self, member: Member) -> None:
        super().__init__()
        self.member = member
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: Any) -> None:
        # Here, not when ws_connect returns: hello may be read before that.
        self.transport = transport
        self.member.socket = self

    def on_ws_disconnected(self, transport: Any) -> None:
        if self.member.socket is self:
            self.member.dropped()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        payload: bytes = frame.get_payload_as_bytes()
        if payload.startswith(MESSAGE_PREFIX):
            self._message(payload)
        elif payload.startswith(ACK_PREFIX):
            self._ack(payload)
        elif payload.startswith(HISTORY_PREFIX):
            self._history(payload)
        elif payload.startswith(HELLO_PREFIX):
            self.member.greeted()
        elif payload.startswith(ERROR_PREFIX):
            self._error(payload)

    def _message(self, payload: bytes) -> None:
        member = self.member
        for seq in _seqs(payload):
            member.see(seq)
        if not member.worker.measuring:
            return
        body = _between(payload, BODY_MARKER, b'"')
        if body is None or not body.isdigit():
            return  # somebody else's message, not the bench's
        result = member.worker.result
        result.deliveries += 1
        result.delivery_ms.append((time.monotonic_ns() - int(body)) / 1e6)

    def _ack(self, payload: bytes) -> None:
        member = self.member
        client_id = _between(payload, CLIENT_ID_MARKER, b'"')
        sent_at = member.in_flight.pop(client_id, None) if client_id else None
        if sent_at is None:
            return
        member.acked_seq = max([member.acked_seq, *_seqs(payload)])
        result = member.worker.result
        result.acked += 1
        result.ack_ms.append((time.monotonic_ns() - sent_at) / 1e6)
        if member.window:
            member.send()

    def _history(self, payload: bytes) -> None:
        member = self.member
        if b'"reset":true' in payload:
            member.resets += 1
        for seq in _seqs(payload):
            member.see(seq)
        if b'"has_more":false' in payload:
            member.caught_up()

    def _error(self, payload: bytes) -> None:
        member = self.member
        errors = member.worker.result.errors
        code = (_between(payload, b'"code":"', b'"') or b"?").decode()
        errors[code] = errors.get(code, 0) + 1
        client_id = _between(payload, CLIENT_ID_MARKER, b'"')
        if client_id is not None and member.in_flight.pop(client_id, None) is not None and member.window:
            member.send()  # keep the window full: refused sends are counted as errors


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
            worker.reconnect = args.get("reconnect", False)
            if args["window"]:
                await worker.run_window(args["window"], args["seconds"])
            else:
                await worker.run_rate(args["rate"], args["seconds"])
            # Let what is in flight arrive before the counts close: until
            # every send is answered (its deliveries were written before its
            # ack, or close to it), then a moment for the last deliveries.
            deadline = time.monotonic() + args["drain_seconds"]
            while not worker.settled() and time.monotonic() < deadline:  # noqa: ASYNC110 (a count, not an event)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            worker.measuring = False
            worker.reconnect = False
            worker.result.cpu_seconds = time.process_time() - cpu_before
            worker.account()
            connection.send(("result", worker.result))
        elif command == "close":
            worker.close()
            connection.send(("closed",))
            return
