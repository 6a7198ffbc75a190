"""Soak test: many clients chatting through nginx while faults are injected, then a report.

    python -m devtools.soak [--clients 8] [--rooms 2] [--seconds 60] [--rate 2]
                           [--faults kill,redis,db,restart] [--fault-every 6] [--seed 1]
    python -m devtools.soak --url http://chat.example.org --seconds 60   # an existing deployment, no faults

Without ``--url`` it starts a whole deployment of its own on free loopback
ports: Redis, FerretDB (a MongoDB wire-protocol server, on PostgreSQL), a supervisord group
of 2 chat processes and nginx in front. Each client behaves like the browser
client: it reconnects with exponential backoff and jitter, resumes with
``since``, and re-sends unacked messages with their original ``client_id``.

Faults, in random order (each kind once before any repeats), one every
``--fault-every`` seconds on average:

- ``kill``: ``kill -9`` one chat process (supervisord starts it again)
- ``redis``: restart Redis
- ``db``: stop the database for a few seconds, then start it again
- ``restart``: a rolling restart of the group, one process at a time (SIGTERM)

At the end every client must hold exactly its room's stored sequence, in
order, with no duplicates, and every acked message must be stored; the exit
status is 0 only then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from chat.config import generate_secret, lifted_limits
from chat.tools.cluster import Cluster
from chat.wire.refusals import Close

from .services import (
    FERRETDB_INSTALL_HINT,
    POSTGRES_INSTALL_HINT,
    TOXIPROXY_INSTALL_HINT,
    FerretDB,
    RedisServer,
    Toxiproxy,
    ferretdb_path,
    free_port_range,
    nginx_path,
    postgres_bindir,
    redis_server_path,
    toxiproxy_path,
)
from .webclient import WebClient

FAULTS = ("kill", "redis", "db", "restart")


async def settle(done: Callable[[], bool], deadline: float) -> None:
    """Wait until ``done()`` or the monotonic ``deadline``, whichever comes first.

    Polling, because what is awaited is spread over every client's state and
    changed by their socket reads; no single event could say it.
    """
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter, as static/chat.js does (with smaller numbers)."""
    return random.random() * min(cap, base * 2.0**attempt)


@dataclass
class ClientReport:
    name: str
    room_id: str
    sent: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # client_id -> seq
    rejected: int = 0
    received: list[int] = field(default_factory=list)  # seqs, in arrival order, first copies only
    duplicates: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # error code -> frames received
    # seq -> wall time this client first had it (live or from history), and
    # seq -> wall time its sender queued it (from the body's t=).
    arrivals: dict[int, float] = field(default_factory=dict)
    sent_at: dict[int, float] = field(default_factory=dict)
    # History answers that said "reload": the client could not catch up frame by frame.
    resets: int = 0


class SoakClient:
    """One chat user in one room, as resilient as the browser client."""

    def __init__(self, web: WebClient, room_id: str, name: str) -> None:
        self.web = web
        self.report = ClientReport(name=name, room_id=room_id)
        self.last_seq = 0
        self.seen: set[int] = set()
        self.pending: dict[str, str] = {}  # client_id -> body, in send order
        self.conn: WebSocketClientConnection | None = None
        self.connected = asyncio.Event()
        self.stopping = False
        self._counter = 0

    async def run(self) -> None:
        attempt = 0
        while not self.stopping:
            try:
                conn = await self.web.connect_socket(self.report.room_id, since=self.last_seq)
            except Exception:
                attempt += 1
                await asyncio.sleep(backoff(attempt))
                continue
            self.conn = conn
            try:
                while (raw := await conn.read_message()) is not None:
                    if self._handle(json.loads(raw)):
                        attempt = 0
            finally:
                self.conn = None
                self.connected.clear()
            if conn.close_code == Close.SESSION_ENDED:
                raise RuntimeError(f"{self.report.name}: session ended ({conn.close_reason})")
            if self.stopping:
                return
            self.report.reconnects += 1
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    def stop(self) -> None:
        self.stopping = True
        if self.conn is not None:
            self.conn.close()

    def send(self) -> None:
        self._counter += 1
        client_id = uuid.uuid4().hex
        self.pending[client_id] = f"soak {self.report.name} #{self._counter} t={time.time():.6f}"
        self.report.sent += 1
        self._write(client_id)

    def _write(self, client_id: str) -> None:
        body = self.pending.get(client_id)
        if body is None or self.conn is None or not self.connected.is_set():
            return  # re-sent on the next hello
        with contextlib.suppress(WebSocketClosedError):
            self.conn.write_message(json.dumps({"type": "send", "client_id": client_id, "body": body}))

    def _handle(self, frame: dict[str, Any]) -> bool:
        """Handle one frame; True when it was a hello (a connection fully opened)."""
        kind = frame["type"]
        if kind == "hello":
            self.connected.set()
            for client_id in list(self.pending):
                self._write(client_id)
            return True
        if kind == "history":
            if frame.get("reset"):
                self.report.resets += 1
            for message in frame["messages"]:
                self._message(message, live=False)
        elif kind == "message":
            self._message(frame["message"], live=True)
        elif kind == "ack":
            self.pending.pop(frame["client_id"], None)
            self.report.acked[frame["client_id"]] = frame["message"]["seq"]
        elif kind == "error":
            self.report.errors[frame["code"]] = self.report.errors.get(frame["code"], 0) + 1
            refused: str | None = frame.get("client_id")
            if frame["code"] in ("unavailable", "rate_limited"):
                if refused:
                    asyncio.get_running_loop().call_later(0.3 + random.random() * 0.5, self._write, refused)
            elif refused and self.pending.pop(refused, None) is not None:
                self.report.rejected += 1
        return False

    def _message(self, message: dict[str, Any], live: bool) -> None:
        seq = message["seq"]
        if seq in self.seen:
            self.report.duplicates += 1
            return
        if seq < self.last_seq:
            self.report.out_of_order += 1
        self.seen.add(seq)
        self.report.received.append(seq)
        self.report.arrivals[seq] = now = time.time()
        self.last_seq = max(self.last_seq, seq)
        if message["body"].startswith("soak ") and " t=" in message["body"]:
            self.report.sent_at[seq] = queued = float(message["body"].rsplit(" t=", 1)[1])
            if live:
                self.report.latencies.append(now - queued)


async def stored_sequence(web: WebClient, room_id: str, attempts: int = 30) -> tuple[list[int], set[str]]:
    """Every stored seq of a room, and the client_ids stored, read through the protocol.

    Retried like any client would: right after a fault, nginx may briefly
    have no process to send the request to (502).
    """
    for attempt in range(attempts):
        try:
            return await _read_stored_sequence(web, room_id)
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 + backoff(attempt))
    raise AssertionError("unreachable")


async def _read_stored_sequence(web: WebClient, room_id: str) -> tuple[list[int], set[str]]:
    conn = await web.connect_socket(room_id, since=0)
    seqs: list[int] = []
    client_ids: set[str] = set()
    try:
        while True:
            raw = await asyncio.wait_for(conn.read_message(), 30)
            if raw is None:
                raise ConnectionError("socket closed while reading history")
            frame = json.loads(raw)
            if frame["type"] == "history":
                seqs += [m["seq"] for m in frame["messages"]]
                client_ids |= {m["client_id"] for m in frame["messages"]}
                if not frame["has_more"]:
                    return seqs, client_ids
    finally:
        conn.close()


@dataclass
class SoakReport:
    clients: list[ClientReport]
    stored: dict[str, list[int]]
    lost: int
    acked_not_stored: int
    unacked: int
    faults: list[str]
    seconds: float
    # How long clients were sending (the rest of ``seconds`` is the drain).
    sending_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.acked_not_stored == 0
            and self.unacked == 0
            and self.duplicated == 0
            and self.out_of_order == 0
            and self.resets == 0
        )

    @property
    def resets(self) -> int:
        return sum(c.resets for c in self.clients)

    @property
    def stored_per_second(self) -> float:
        return sum(len(s) for s in self.stored.values()) / self.sending_seconds if self.sending_seconds else 0.0

    @property
    def slowest_to_everyone(self) -> float:
        """The longest any stored message took from its sender's send to the last client of its room."""
        slowest = 0.0
        for room_id in self.stored:
            room = [c for c in self.clients if c.room_id == room_id]
            for seq, queued in {s: t for c in room for s, t in c.sent_at.items()}.items():
                arrivals = [c.arrivals[seq] for c in room if seq in c.arrivals]
                if len(arrivals) == len(room):
                    slowest = max(slowest, max(arrivals) - queued)
        return slowest

    @property
    def duplicated(self) -> int:
        return sum(c.duplicates for c in self.clients)

    @property
    def out_of_order(self) -> int:
        return sum(c.out_of_order for c in self.clients)

    def latency_ms(self, quantile: float) -> float:
        values = sorted(v for c in self.clients for v in c.latencies)
        if not values:
            return 0.0
        return 1000 * values[min(len(values) - 1, int(quantile * len(values)))]

    def render(self) -> str:
        delivered = [len(c.received) for c in self.clients]
        lines = [
            f"soak: {len(self.clients)} clients in {len(self.stored)} rooms for {self.seconds:.0f}s",
            f"  faults injected   {len(self.faults)}: {', '.join(self.faults) or 'none'}",
            f"  sent              {sum(c.sent for c in self.clients)}",
            f"  acked             {sum(len(c.acked) for c in self.clients)}",
            f"  rejected          {sum(c.rejected for c in self.clients)}",
            f"  stored            {sum(len(s) for s in self.stored.values())} "
            f"({self.stored_per_second:.1f}/s while sending)",
            f"  delivered/client  min {min(delivered)}  mean {statistics.mean(delivered):.1f}  max {max(delivered)}",
            f"  reconnects        {sum(c.reconnects for c in self.clients)}",
            f"  latency p50/p99   {self.latency_ms(0.5):.1f} ms / {self.latency_ms(0.99):.1f} ms",
            f"  slowest to all    {self.slowest_to_everyone * 1000:.1f} ms (a message, to every client of its room)",
            f"  resets            {self.resets}",
            f"  lost              {self.lost}",
            f"  acked not stored  {self.acked_not_stored}",
            f"  never acked       {self.unacked}",
            f"  duplicated        {self.duplicated}",
            f"  out of order      {self.out_of_order}",
            f"  result            {'OK' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "rooms": len(self.stored),
            "seconds": self.seconds,
            "faults": self.faults,
            "sent": sum(c.sent for c in self.clients),
            "acked": sum(len(c.acked) for c in self.clients),
            "lost": self.lost,
            "acked_not_stored": self.acked_not_stored,
            "unacked": self.unacked,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "reconnects": sum(c.reconnects for c in self.clients),
            "delivered": {c.name: len(c.received) for c in self.clients},
            "latency_ms": {"p50": self.latency_ms(0.5), "p99": self.latency_ms(0.99)},
            "stored_per_second": self.stored_per_second,
            "slowest_to_everyone_ms": self.slowest_to_everyone * 1000,
            "resets": self.resets,
            "ok": self.ok,
        }


class Deployment:
    """A whole deployment on this machine: Redis, FerretDB on PostgreSQL, supervisord + 2 chat processes, nginx.

    With ``toxiproxy=True`` the chat processes reach Redis and the database
    through a Toxiproxy (proxies named ``redis`` and ``database``), so tests
    can add network faults between them: see :class:`devtools.services.Toxiproxy`.
    """

    def __init__(
        self, work_dir: Path, processes: int = 2, env: dict[str, str] | None = None, *, toxiproxy: bool = False
    ) -> None:
        missing = [
            hint
            for path, hint in (
                (ferretdb_path(), f"ferretdb: {FERRETDB_INSTALL_HINT}"),
                (postgres_bindir(), f"PostgreSQL (FerretDB stores on it): {POSTGRES_INSTALL_HINT}"),
                (redis_server_path(), "redis-server: apt-get install redis-server"),
                (nginx_path(), "nginx: apt-get install nginx"),
                *([(toxiproxy_path(), f"toxiproxy-server: {TOXIPROXY_INSTALL_HINT}")] if toxiproxy else []),
            )
            if path is None
        ]
        if missing:
            raise RuntimeError("missing: " + "; ".join(missing))
        self.toxiproxy = Toxiproxy(str(toxiproxy_path()), work_dir / "toxiproxy") if toxiproxy else None
        # How long a "db" fault keeps the database down (a random length in this range).
        self.db_outage_seconds = (1.0, 3.0)
        self.redis = RedisServer(str(redis_server_path()), work_dir / "redis")
        self.database = FerretDB(str(ferretdb_path()), work_dir / "ferretdb")
        ports = free_port_range(processes + 1)  # the processes', then nginx's: one range, so they cannot meet
        self.cluster = Cluster(
            run_dir=work_dir / "cluster",
            processes=processes,
            base_port=ports,
            listen_port=ports + processes,
            env={
                "CHAT_DATABASE_URL": "",  # set in start(), once the database has its port
                "CHAT_BROKER_URL": "",
                "CHAT_COOKIE_SECRETS": generate_secret(),
                # Faster catch-up than production defaults, so a soak of a
                # minute exercises it; the guarantees are the same.
                "CHAT_CATCHUP_INTERVAL_SECONDS": "2",
                "CHAT_BCRYPT_ROUNDS": "4",
                # A soak is load, not abuse: every client is a chatty user on
                # one address, reconnecting through every fault.
                **lifted_limits(),
                # Clients that reconnect after an outage catch up frame by
                # frame, however far behind: a soak checks they miss nothing.
                "CHAT_RESUME_MAX_MESSAGES": "1000000",
                **(env or {}),
            },
        )

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self) -> Self:
        try:
            self.redis.start()
            self.database.start()
            database_port, redis_port = self.database.port, self.redis.port
            if self.toxiproxy is not None:
                self.toxiproxy.start()
                database_port = self.toxiproxy.create_proxy("database", self.database.port)
                redis_port = self.toxiproxy.create_proxy("redis", self.redis.port)
            self.cluster.env["CHAT_DATABASE_URL"] = (
                f"mongodb://127.0.0.1:{database_port}/chat?serverSelectionTimeoutMS=2000"
            )
            self.cluster.env["CHAT_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            # Picked again now that the services above hold theirs: picked
            # before them, one of them could take a port of the range (a chat
            # process then found its port in use, restart after restart).
            ports = free_port_range(self.cluster.processes + 1)
            self.cluster.base_port, self.cluster.listen_port = ports, ports + self.cluster.processes
            self.cluster.start()
        except BaseException:
            # Whatever did start must not outlive a failed start.
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything; safe on a deployment that started only in part, or not at all."""
        self.cluster.stop()
        if self.toxiproxy is not None:
            self.toxiproxy.stop()
        self.database.stop()
        self.redis.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def inject(self, fault: str) -> None:
        """Cause one fault and return once the deployment has been told to recover."""
        if fault == "kill":
            port = random.choice(self.cluster.ports)
            os.kill(self.cluster.process_pid(port), signal.SIGKILL)  # supervisord restarts it
        elif fault == "redis":
            with self.redis.outage():
                time.sleep(random.uniform(0.5, 2.0))
        elif fault == "db":
            with self.database.outage():
                time.sleep(random.uniform(*self.db_outage_seconds))
        elif fault == "restart":
            for port in self.cluster.ports:
                self.cluster.supervisorctl("restart", f"chat:chat-{port}")
        else:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")


async def run_soak(
    url: str,
    *,
    clients: int = 8,
    rooms: int = 2,
    seconds: float = 60.0,
    rate: float = 2.0,
    faults: tuple[str, ...] = (),
    fault_every: float = 6.0,
    inject: Callable[[str], None] | None = None,
    drain_timeout: float = 90.0,
    log: Callable[[str], None] = lambda line: None,
) -> SoakReport:
    """Run the soak against ``url``; ``inject`` causes a named fault (needed when ``faults`` is set)."""
    owner = WebClient(url)
    await owner.register()
    room_ids = [await owner.create_room(f"soak {uuid.uuid4().hex[:6]} {i}") for i in range(rooms)]
    soakers = []
    for i in range(clients):
        web = WebClient(url)
        name = await web.register(f"soak_{uuid.uuid4().hex[:6]}_{i}")
        soakers.append(SoakClient(web, room_ids[i % rooms], name))
    runners = [asyncio.create_task(c.run()) for c in soakers]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in soakers)), 60)
    log(f"{clients} clients connected in {rooms} rooms through {url}")

    injected: list[str] = []
    start = time.monotonic()

    async def talk(client: SoakClient) -> None:
        while time.monotonic() - start < seconds:
            client.send()
            await asyncio.sleep(random.expovariate(rate))

    async def break_things() -> None:
        # Random order, but every kind once before any repeats, so even a
        # short run sees each fault.
        upcoming: list[str] = []
        while time.monotonic() - start < seconds - 1:
            await asyncio.sleep(random.uniform(0.5, 1.5) * fault_every)
            if time.monotonic() - start >= seconds - 1:
                return
            if not upcoming:
                upcoming = random.sample(faults, len(faults))
            fault = upcoming.pop()
            log(f"[{time.monotonic() - start:5.1f}s] fault: {fault}")
            injected.append(fault)
            assert inject is not None
            await asyncio.to_thread(inject, fault)

    await asyncio.gather(*(talk(c) for c in soakers), *([break_things()] if faults else []))
    sending_seconds = time.monotonic() - start
    log(f"sending stopped after {sending_seconds:.1f}s; draining")

    # Every message must end up acked, and every client must catch up.
    deadline = time.monotonic() + drain_timeout
    await settle(lambda: not any(c.pending for c in soakers), deadline)
    stored: dict[str, list[int]] = {}
    stored_ids: dict[str, set[str]] = {}
    for room_id in room_ids:
        # History runs up to what the answering process has delivered; a
        # message whose publish died with its process (killed between ack
        # and publish) gets there at the next catch-up sweep, so read again
        # until every ack is in, or time is up (then it counts as lost).
        acked = {client_id for c in soakers if c.report.room_id == room_id for client_id in c.report.acked}
        while True:
            stored[room_id], stored_ids[room_id] = await stored_sequence(owner, room_id)
            if acked <= stored_ids[room_id] or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
    await settle(lambda: not any(set(stored[c.report.room_id]) - c.seen for c in soakers), deadline)
    for client in soakers:
        client.stop()
    await asyncio.gather(*runners, return_exceptions=True)

    lost = sum(len(set(stored[c.report.room_id]) - c.seen) for c in soakers)
    acked_not_stored = sum(len(set(c.report.acked) - stored_ids[c.report.room_id]) for c in soakers)
    return SoakReport(
        clients=[c.report for c in soakers],
        stored=stored,
        lost=lost,
        acked_not_stored=acked_not_stored,
        unacked=sum(len(c.pending) for c in soakers),
        faults=injected,
        seconds=time.monotonic() - start,
        sending_seconds=sending_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an existing deployment (no faults); default: start one")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--senders-per-room", type=int, help="clients in each room (sets --clients to rooms x this)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second per client (mean)")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, from {', '.join(FAULTS)}; 'none' for none"
    )
    parser.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between faults")
    parser.add_argument("--seed", type=int, help="random seed (fault choice and timing)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.senders_per_room is not None:
        args.clients = args.rooms * args.senders_per_room
    faults = tuple(f for f in args.faults.split(",") if f and f != "none")
    for fault in faults:
        if fault not in FAULTS:
            parser.error(f"unknown fault {fault!r}")
    if args.seed is not None:
        random.seed(args.seed)
    if args.url and faults:
        faults = ()
        print("soak: --url given, so no faults are injected (they need the deployment this tool starts)")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    deployment: Deployment | None = None
    work = tempfile.TemporaryDirectory(prefix="chat-soak-")
    try:
        if args.url:
            url = args.url
        else:
            deployment = Deployment(Path(work.name))
            say(f"starting Redis, FerretDB on PostgreSQL, 2 chat processes and nginx under {work.name}")
            deployment.start()
            url = deployment.url
        report = asyncio.run(
            run_soak(
                url,
                clients=args.clients,
                rooms=args.rooms,
                seconds=args.seconds,
                rate=args.rate,
                faults=faults,
                fault_every=args.fault_every,
                inject=deployment.inject if deployment else None,
                log=say,
            )
        )
    finally:
        if deployment is not None:
            deployment.stop()
        work.cleanup()
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
