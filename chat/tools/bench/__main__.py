"""``python -m chat.tools.bench`` (``make bench``): how fast chat fans messages out.

For each target (a chat process, the cluster, the minimal Tornado baseline, or
servers already running) and each scenario (so many sockets over so many
rooms), the bench signs users in, opens the sockets from worker processes
(picows clients), then drives the room senders at a fixed rate (``--rate``,
messages/s in all) or saturates them (``--window``: messages each sender keeps
unacknowledged). It reports deliveries/s, send-to-ack and send-to-delivery
percentiles, errors, dropped sockets, handshakes/s, server memory per socket
and the CPU used by the servers and by the client itself (a client near 100%
of a core was the bottleneck: add ``--workers``). Results go to
``--out`` as report.json, report.md and PNG plots.

Examples::

    python -m chat.tools.bench --targets chat,baseline --room-sizes 10,100,1000 --window 8
    python -m chat.tools.bench --targets cluster --sockets 1000 --rooms 100 --rate 1000
    python -m chat.tools.bench --targets "chat[CHAT_EVENT_LOOP=uvloop],chat"

A target may carry server settings in brackets, which is how a setting is
measured on and off in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from . import report
from .ceilings import measure as measure_ceilings
from .client import SocketPlan, WorkerResult, worker_main
from .report import ScenarioResult
from .targets import Target, cpu_by_pid, cpu_seconds, make_target, rss_bytes, users_for

DEFAULT_OUT = Path(".cache/bench")


@dataclass(frozen=True)
class Scenario:
    sockets: int
    rooms: int
    window: int
    rate: float
    seconds: float
    # Restart every chat process this many seconds into the run (None: no restart).
    restart_at: float | None = None

    @property
    def mode(self) -> str:
        return f"window {self.window}" if self.window else f"rate {self.rate:g}/s"


def parse_target(spec: str) -> tuple[str, dict[str, str]]:
    """``chat[CHAT_X=1,CHAT_Y=2]`` -> ("chat", {...})."""
    match = re.fullmatch(r"([^\[\]]+)(?:\[(.*)\])?", spec.strip())
    if not match:
        raise ValueError(f"bad target {spec!r}")
    env = dict(pair.split("=", 1) for pair in filter(None, (match.group(2) or "").split(",")))
    return match.group(1), env


def split_targets(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in (*parts, current) if p.strip()]


class Progress:
    """One line on stderr that redraws itself."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.interactive = sys.stderr.isatty()
        self._last_label = ""

    def show(self, label: str, fraction: float) -> None:
        overall = (self.done + fraction) / max(self.total, 1)
        if self.interactive:
            bar = "#" * int(overall * 30)
            sys.stderr.write(f"\r[{bar:<30}] {overall:4.0%}  {label[:70]:<70}")
        elif label.split(":")[:2] != self._last_label.split(":")[:2]:
            # Not a terminal (a log, CI): one line per step, not per redraw.
            sys.stderr.write(f"{overall:4.0%}  {label}\n")
        self._last_label = label
        sys.stderr.flush()

    def finish(self) -> None:
        if self.interactive:
            sys.stderr.write("\n")


async def sign_in(target: Target, users: int, rooms: int) -> tuple[list[str], list[str]]:
    """Cookies of ``users`` fresh accounts, and ``rooms`` fresh room ids."""
    if target.anonymous:
        stamp = int(time.time() * 1000)
        return [""] * users, [f"r{stamp}-{i}" for i in range(rooms)]
    from devtools.webclient import WebClient  # a checkout's tool

    gate = asyncio.Semaphore(16)

    async def one() -> WebClient:
        async with gate:
            client = WebClient(target.url)
            await client.register()
            return client

    clients = await asyncio.gather(*(one() for _ in range(users)))
    room_ids = [await clients[0].create_room() for _ in range(rooms)]

    async def join(client: WebClient, room_id: str) -> None:
        async with gate:
            response = await client.post(f"/rooms/{room_id}/join", {})
        if response.code >= 400:
            raise RuntimeError(f"joining room {room_id}: HTTP {response.code}")

    # Each room's sender (see plan_sockets) is a member already, as in a
    # community: a first send in a public room joins it, and two hundred
    # joins in the first second are not the load being measured.
    await asyncio.gather(*(join(clients[i % users], room_ids[i]) for i in range(rooms)))
    return [client.cookie_header() for client in clients], room_ids


def socket_url(base: str, room_id: str) -> str:
    return base.replace("http://", "ws://").replace("https://", "wss://") + f"/rooms/{room_id}/ws"


def plan_sockets(target: Target, scenario: Scenario, cookies: list[str], room_ids: list[str]) -> list[SocketPlan]:
    origin = target.url
    return [
        SocketPlan(
            url=socket_url(target.url, room_ids[i % scenario.rooms]),
            cookie=cookies[i % len(cookies)],
            origin=origin,
            sender=i < scenario.rooms,  # the first socket of each room sends
            room_id=room_ids[i % scenario.rooms],
        )
        for i in range(scenario.sockets)
    ]


def merge(results: Sequence[WorkerResult]) -> WorkerResult:
    total = WorkerResult()
    for r in results:
        total.connected += r.connected
        total.connect_failures += r.connect_failures
        total.connect_seconds = max(total.connect_seconds, r.connect_seconds)
        total.sent += r.sent
        total.acked += r.acked
        total.deliveries += r.deliveries
        total.disconnects += r.disconnects
        total.cpu_seconds += r.cpu_seconds
        total.delivery_ms.extend(r.delivery_ms)
        total.ack_ms.extend(r.ack_ms)
        total.resumed += r.resumed
        total.resume_ms.extend(r.resume_ms)
        if r.first_drop is not None:
            total.first_drop = min(total.first_drop or r.first_drop, r.first_drop)
        if r.last_resume is not None:
            total.last_resume = max(total.last_resume or r.last_resume, r.last_resume)
        total.gaps += r.gaps
        total.duplicates += r.duplicates
        total.resets += r.resets
        total.unacked += r.unacked
        total.still_down += r.still_down
        for room, seqs in r.last_seqs.items():
            total.last_seqs.setdefault(room, []).extend(seqs)
        for code, count in r.errors.items():
            total.errors[code] = total.errors.get(code, 0) + count
    return total


def ask(pipes: list[Connection], command: str, args: dict[str, Any] | list[dict[str, Any]]) -> list[Any]:
    for i, pipe in enumerate(pipes):
        pipe.send((command, args[i] if isinstance(args, list) else args))
    return [pipe.recv() for pipe in pipes]


def run_scenario(
    target: Target, scenario: Scenario, workers: int, use_uvloop: bool, progress: Progress
) -> ScenarioResult:
    label = f"{target.name}: {scenario.sockets} sockets / {scenario.rooms} rooms, {scenario.mode}"
    progress.show(f"{label}: signing in", 0)
    users = 1 if target.anonymous else users_for(scenario.sockets)
    cookies, room_ids = asyncio.run(sign_in(target, users, scenario.rooms))
    plans = plan_sockets(target, scenario, cookies, room_ids)
    shares = [plans[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    processes = []
    for share in shares:
        parent, child = context.Pipe()
        process = context.Process(target=worker_main, args=(child, share, use_uvloop), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        rss_before = sum(rss_bytes(pid) for pid in target.pids)
        progress.show(f"{label}: connecting", 0.05)
        ask(pipes, "connect", {"concurrency": 100})
        time.sleep(1.0)  # presence and history settle before memory is read
        rss_after = sum(rss_bytes(pid) for pid in target.pids)
        senders_per_worker = [sum(p.sender for p in share) for share in shares]
        total_senders = max(sum(senders_per_worker), 1)
        start_at = time.monotonic() + 0.5
        # At most; workers stop waiting once every send is answered (and,
        # after a restart, every socket is back).
        drain = 15.0 if scenario.restart_at is None else 120.0
        args = [
            {
                "start_at": start_at,
                "seconds": scenario.seconds,
                "window": scenario.window,
                "rate": scenario.rate * n / total_senders,
                "drain_seconds": drain,
                "reconnect": scenario.restart_at is not None,
            }
            for n in senders_per_worker
        ]
        cpu_before = sum(cpu_seconds(pid) for pid in target.pids)
        # By pid, asked again at the end: a database forks a backend per connection as it goes.
        infra_before = {name: cpu_by_pid(pids()) for name, pids in target.infrastructure.items()}
        for i, pipe in enumerate(pipes):
            pipe.send(("run", args[i]))
        deadline = start_at + scenario.seconds + drain + 60
        restart_due = None if scenario.restart_at is None else start_at + scenario.restart_at
        processes_up_seconds: float | None = None
        while not all(pipe.poll() for pipe in pipes):
            if restart_due is not None and time.monotonic() >= restart_due:
                progress.show(f"{label}: restarting every chat process", 0.1)
                restarting = time.monotonic()
                target.restart()
                processes_up_seconds = time.monotonic() - restarting
                restart_due = None
            if time.monotonic() > deadline or not all(p.is_alive() for p in processes):
                raise RuntimeError(f"{label}: a client worker died or hung; see its traceback above")
            elapsed = time.monotonic() - start_at
            progress.show(
                f"{label}: {max(elapsed, 0):.0f}/{scenario.seconds:.0f} s",
                0.1 + 0.9 * min(max(elapsed, 0) / scenario.seconds, 1),
            )
            time.sleep(0.25)
        measured = time.monotonic() - start_at
        cpu_after = sum(cpu_seconds(pid) for pid in target.pids)
        infra_after = {name: cpu_by_pid(pids()) for name, pids in target.infrastructure.items()}
        results = [pipe.recv()[1] for pipe in pipes]
        ask(pipes, "close", {})
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
    total = merge(results)
    restarted = scenario.restart_at is not None
    # Each room's last seq held by any socket: a socket holding less is behind.
    room_last = {room: max(seqs) for room, seqs in total.last_seqs.items()}
    behind = sum(seq < room_last[room] for room, seqs in total.last_seqs.items() for seq in seqs)
    # Sockets that failed to connect receive nothing; the rest should get everything.
    room_size = total.connected / scenario.rooms
    seconds = scenario.seconds
    samples = np.asarray(total.delivery_ms, dtype=np.float32)
    return ScenarioResult(
        target=target.name,
        sockets=scenario.sockets,
        rooms=scenario.rooms,
        mode=scenario.mode,
        seconds=seconds,
        sent=total.sent,
        acked=total.acked,
        offered_messages_per_second=None if scenario.window else scenario.rate,
        stored_messages_per_second=round(total.acked / seconds, 1),
        missing=total.gaps + sum(room_last[room] - seq for room, seqs in total.last_seqs.items() for seq in seqs),
        duplicates=total.duplicates,
        deliveries=total.deliveries,
        expected_deliveries=int(total.acked * room_size),
        # Deliveries of messages sent in the window, over the window: the
        # drain only lets late ones arrive.
        deliveries_per_second=round(total.deliveries / seconds, 1),
        offered_deliveries_per_second=None if scenario.window else scenario.rate * room_size,
        ack_ms=report.percentiles(total.ack_ms),
        delivery_ms=report.percentiles(samples),
        errors=total.errors,
        connect_failures=total.connect_failures,
        disconnects=total.disconnects,
        handshakes_per_second=round(total.connected / total.connect_seconds, 1) if total.connect_seconds else 0.0,
        server_rss_per_socket_kib=round((rss_after - rss_before) / scenario.sockets / 1024, 1) if target.pids else None,
        # The processes a restart replaced took their CPU counts with them.
        server_cpu_percent=round(100 * (cpu_after - cpu_before) / measured, 0)
        if target.pids and not restarted
        else None,
        client_cpu_percent=round(100 * total.cpu_seconds / measured, 0),
        infrastructure_cpu_percent={
            name: round(100 * sum(cpu - infra_before[name].get(pid, 0.0) for pid, cpu in after.items()) / measured)
            for name, after in infra_after.items()
        },
        delivery_samples=samples,
        restart=report.RestartResult(
            dropped=total.disconnects,
            resumed=total.resumed,
            all_back_seconds=round(total.last_resume - total.first_drop, 1)
            if total.first_drop is not None and total.last_resume is not None
            else None,
            resume_ms=report.percentiles(total.resume_ms),
            processes_up_seconds=round(processes_up_seconds, 1) if processes_up_seconds is not None else None,
            still_down=total.still_down,
            gaps=total.gaps,
            duplicates=total.duplicates,
            resets=total.resets,
            unacked=total.unacked,
            behind=behind,
        )
        if restarted
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m chat.tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="chat,baseline", help="comma-separated: chat, cluster, baseline, URL")
    parser.add_argument("--processes", type=int, default=2, help="chat processes in a cluster target")
    parser.add_argument("--sockets", type=int, default=1000, help="sockets in all (with --rooms)")
    parser.add_argument("--rooms", type=int, default=1, help="rooms the sockets are spread over")
    parser.add_argument("--room-sizes", help="instead of --sockets: one scenario per room size, e.g. 10,100,1000")
    parser.add_argument(
        "--room-counts", help="instead of --rooms: one scenario per number of rooms of --room-size, e.g. 1,100,1000"
    )
    parser.add_argument("--room-size", type=int, default=10, help="members per room with --room-counts")
    parser.add_argument("--window", type=int, default=0, help="saturate: messages each sender keeps in flight")
    parser.add_argument("--rate", type=float, default=0, help="fixed load: messages/s over all rooms")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="client processes")
    parser.add_argument(
        "--restart-at",
        type=float,
        help="cluster: restart every chat process this many seconds into the run; sockets come back as "
        "the browser's do, and the report says how fast and whether anything was lost",
    )
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument(
        "--no-ceilings",
        dest="ceilings",
        action="store_false",
        help="skip measuring what each target's database and broker alone accept (a few seconds per start)",
    )
    parser.add_argument(
        "--keep-servers",
        action="store_true",
        help="run every scenario on the same servers (default: fresh servers and database for each)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if bool(args.window) == bool(args.rate):
        parser.error("give exactly one of --window and --rate")

    if args.room_counts:
        scenarios = [
            Scenario(int(count) * args.room_size, int(count), args.window, args.rate, args.seconds, args.restart_at)
            for count in args.room_counts.split(",")
        ]
    elif args.room_sizes:
        scenarios = [
            Scenario(int(size) * args.rooms, args.rooms, args.window, args.rate, args.seconds, args.restart_at)
            for size in args.room_sizes.split(",")
        ]
    else:
        scenarios = [Scenario(args.sockets, args.rooms, args.window, args.rate, args.seconds, args.restart_at)]
    # A SIGTERM must still stop the servers the bench started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    specs = split_targets(args.targets)
    progress = Progress(len(specs) * len(scenarios))
    results: list[ScenarioResult] = []
    for spec in specs:
        name, env = parse_target(spec)
        target = make_target(name, env, args.processes)
        if env:
            target.name = f"{target.name} [{', '.join(f'{k}={v}' for k, v in env.items())}]"
        # Fresh servers for each scenario by default: on FerretDB every
        # history read scans the messages collection, so what earlier
        # scenarios stored would slow the later ones' handshakes.
        batches = [scenarios] if args.keep_servers else [[scenario] for scenario in scenarios]
        for batch in batches:
            progress.show(f"{target.name}: starting", 0)
            target.start()
            try:
                ceilings = {}
                if args.ceilings and not target.anonymous and target.scratch_dir is not None:
                    progress.show(f"{target.name}: measuring what its database and broker alone accept", 0)
                    ceilings = measure_ceilings(target.database_url, target.broker_url, target.scratch_dir)
                for scenario in batch:
                    results.append(run_scenario(target, scenario, args.workers, args.uvloop, progress))
                    results[-1].ceilings = ceilings
                    progress.done += 1
            finally:
                target.stop()
    progress.finish()
    path = report.write(results, args.out, ["python -m chat.tools.bench", *argv])
    print(report.markdown(results))
    print(f"\nreport: {path} (and report.json, plots) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
