"""Network faults between the chat processes and their backing services, through Toxiproxy.

A real deployment (Redis, FerretDB, supervisord with 2 chat processes, nginx)
whose processes reach Redis and the database only through Toxiproxy. For each
fault, clients that behave like the browser send steadily into a room while
the fault is on for a few seconds, then for a while after it is gone. Each
test checks that:

- nothing acked is lost: every acked ``client_id`` is stored exactly once,
  and every client ends up with the room's stored sequence once, in ``seq``
  order (``assert_nothing_lost``);
- no process wedges: each process answers ``/healthz`` within a second
  throughout, and sending resumes within :data:`RECOVERY_BOUND_SECONDS` of the
  toxic being removed;
- ``/readyz`` (asked from this machine, which sees the details) names the
  component that hangs as unavailable while it hangs, and says ready again
  once it is back.

Recovery time is from the moment the toxic is removed to the moment the first
message queued after that is stored, acked and delivered to every client of
the room; each test prints it (``pytest -s``), with the fault's effect on
``/readyz``.

While a component hangs, ``/readyz`` names it within 2 s: each probe has a
time limit of its own (``READINESS_PROBE_SECONDS``), since the client
libraries give up only after 5 s (redis-py) to 15 s (PyMongo's heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.services import Toxiproxy
from devtools.soak import Deployment, SoakReport, run_soak
from tests.support.soak import assert_nothing_lost

BOTH_WAYS = ("upstream", "downstream")
# Clients send for this long before the fault, and this long after it is removed.
BEFORE_SECONDS = 2.0
AFTER_SECONDS = 6.0
# The first message queued after the toxic is removed reaches everyone within this.
RECOVERY_BOUND_SECONDS = 8.0
HEALTHZ_BOUND_SECONDS = 1.0
# /readyz is asked this long after the toxic is on: long enough for the
# processes' connections to be caught in it, not to have timed out already.
READYZ_AFTER_SECONDS = 1.0
# While a component hangs, /readyz answers once its client gives up on it:
# redis-py's socket timeout (5 s by default) for the broker; for the database,
# PyMongo's monitor, which finds the server silent at its next heartbeat
# (every 10 s) after connectTimeoutMS (5 s), and cancels what waits on it.
READYZ_WITHIN_SECONDS = {"broker": 5.0 + 2.0, "database": 10.0 + 5.0 + 2.0}


@dataclass(frozen=True)
class Fault:
    name: str
    proxy: str  # "redis" or "database": the Toxiproxy proxies devtools.soak.Deployment makes
    kind: str
    attributes: dict[str, Any]
    streams: tuple[str, ...]
    seconds: float  # how long the toxic stays on (at least)
    # The /readyz check that must say "unavailable" while the toxic is on, if any.
    unready: str | None = None

    @property
    def readyz_within(self) -> float:
        """How long /readyz may take to answer while this fault is on (it answers once its client gives up)."""
        return READYZ_WITHIN_SECONDS.get(self.unready or "", 5.0)

    @property
    def longest_on(self) -> float:
        """The toxic stays on until /readyz has answered, so at most this long."""
        return max(self.seconds, READYZ_AFTER_SECONDS + self.readyz_within)


FAULTS = [
    Fault("database latency 500 ms", "database", "latency", {"latency": 500, "jitter": 0}, ("downstream",), 4.0),
    # 1 KB/s each way: a few publishes a second fill it, presence and
    # rate-limit traffic queue behind them.
    Fault("redis bandwidth 1 KB/s", "redis", "bandwidth", {"rate": 1}, BOTH_WAYS, 4.0),
    # Data stops both ways, nothing is closed: what a dead peer or a dropped
    # route looks like until a timeout fires. Removing it closes the connections.
    Fault("redis hangs", "redis", "timeout", {"timeout": 0}, BOTH_WAYS, 4.0, unready="broker"),
    Fault("database hangs", "database", "timeout", {"timeout": 0}, BOTH_WAYS, 4.0, unready="database"),
    # Only the answers stop: writes are done but never confirmed, so clients
    # re-send them with their client_id, which must not store them twice.
    Fault("database answers lost", "database", "timeout", {"timeout": 0}, ("downstream",), 4.0, unready="database"),
    # Every connection that carries data is reset (RST) at once, new ones too.
    Fault("redis resets", "redis", "reset_peer", {"timeout": 0}, ("downstream",), 3.0),
]


def get_json(url: str, timeout: float) -> tuple[int | None, dict[str, Any], float]:
    """(status or None when no answer came, JSON body, seconds taken) of a GET (callable from a thread)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        return None, {"error": repr(exc)}, time.monotonic() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"raw": raw.decode(errors="replace")}
    return status, body, time.monotonic() - started


@dataclass
class HealthWatch:
    """Asks every process for /healthz twice a second; remembers every answer slower than a second, or missing."""

    ports: list[int]
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            answers = await asyncio.gather(
                *(
                    asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/healthz", HEALTHZ_BOUND_SECONDS)
                    for port in self.ports
                )
            )
            for port, (status, body, seconds) in zip(self.ports, answers, strict=True):
                self.checks += 1
                self.slowest = max(self.slowest, seconds)
                if status != 200 or seconds > HEALTHZ_BOUND_SECONDS:
                    self.failures.append(f"{time.time():.3f} :{port} -> {status} in {seconds:.2f}s {body}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


@dataclass
class Outcome:
    """What happened around one fault."""

    applied_at: float = 0.0  # wall clock, as the clients' timestamps
    removed_at: float = 0.0
    readyz: dict[int, tuple[int | None, dict[str, Any], float]] = field(default_factory=dict)
    ready_again_after: float | None = None  # seconds from removal to every process's /readyz 200


async def inject(deployment: Deployment, fault: Fault, outcome: Outcome) -> None:
    """The toxic on for ``fault.seconds`` (and until /readyz has answered), off, then wait for ready."""
    proxy = deployment.toxiproxy
    assert proxy is not None
    ports = deployment.cluster.ports
    names = [
        await asyncio.to_thread(proxy.add_toxic, fault.proxy, fault.kind, fault.attributes, stream=stream)
        for stream in fault.streams
    ]
    outcome.applied_at = time.time()
    try:
        await asyncio.sleep(READYZ_AFTER_SECONDS)
        answers = await asyncio.gather(
            *(asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz", fault.readyz_within) for port in ports)
        )
        outcome.readyz = dict(zip(ports, answers, strict=True))
        await asyncio.sleep(max(0.0, outcome.applied_at + fault.seconds - time.time()))
    finally:
        for name in names:
            await asyncio.to_thread(proxy.remove_toxic, fault.proxy, name)
        outcome.removed_at = time.time()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answers = await asyncio.gather(
            *(asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz", 5) for port in ports)
        )
        if all(status == 200 for status, _, _ in answers):
            outcome.ready_again_after = time.time() - outcome.removed_at
            return
        await asyncio.sleep(0.1)


def recovery_seconds(report: SoakReport, since: float) -> float | None:
    """From ``since`` to when the first message queued after it was acked and at every client of its room."""
    acked = {seq for client in report.clients for seq in client.acked.values()}
    reached_everyone: list[float] = []
    for room_id in report.stored:
        room = [c for c in report.clients if c.room_id == room_id]
        queued = {seq for c in room for seq, at in c.sent_at.items() if at >= since and seq in acked}
        for seq in queued:
            arrivals = [c.arrivals.get(seq) for c in room]
            if all(arrival is not None for arrival in arrivals):
                reached_everyone.append(max(a for a in arrivals if a is not None))
    return min(reached_everyone) - since if reached_everyone else None


def wait_ready(deployment: Deployment, timeout: float = 30.0) -> None:
    """Until every process's /readyz says 200 (after a fault, before the next test's clients)."""
    deadline = time.monotonic() + timeout
    while any(get_json(f"http://127.0.0.1:{port}/readyz", 5)[0] != 200 for port in deployment.cluster.ports):
        assert time.monotonic() < deadline, "the deployment did not become ready again"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _no_toxic_left_behind(proxied_deployment: Deployment) -> None:
    # A test that failed mid-fault must not leave its toxic, or its unready
    # processes, to the next one.
    assert proxied_deployment.toxiproxy is not None
    proxied_deployment.toxiproxy.reset()
    wait_ready(proxied_deployment)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name.replace(" ", "-") for f in FAULTS])
async def test_a_network_fault_loses_nothing_wedges_nothing_and_readyz_names_it(
    proxied_deployment: Deployment, fault: Fault
) -> None:
    deployment = proxied_deployment
    pids = {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports}
    sending = asyncio.Event()
    outcome = Outcome()
    watch = HealthWatch(deployment.cluster.ports)
    stop_watching = asyncio.Event()

    async def fault_on_then_off() -> None:
        await sending.wait()
        await asyncio.sleep(BEFORE_SECONDS)
        await inject(deployment, fault, outcome)

    def log(line: str) -> None:
        if "clients connected" in line:
            sending.set()  # run_soak starts its clock and its senders now

    watcher = asyncio.create_task(watch.run(stop_watching))
    try:
        # The clients send until AFTER_SECONDS past the latest the toxic can
        # be removed, so there are new messages to measure recovery with.
        report, _ = await asyncio.gather(
            run_soak(
                deployment.url,
                clients=4,
                rooms=1,
                seconds=BEFORE_SECONDS + fault.longest_on + AFTER_SECONDS,
                rate=3,
                drain_timeout=60,
                log=log,
            ),
            fault_on_then_off(),
        )
    finally:
        stop_watching.set()
        await watcher

    recovery = recovery_seconds(report, outcome.removed_at)
    print(f"\n{fault.name}: toxic {fault.kind} {fault.attributes} on {fault.proxy} ({'/'.join(fault.streams)})")
    print(f"  on for            {outcome.removed_at - outcome.applied_at:.1f}s")
    for port, (status, body, seconds) in outcome.readyz.items():
        print(f"  /readyz :{port}    {status} in {seconds:.2f}s {body.get('checks', body)}")
    print(f"  ready again after {outcome.ready_again_after}s")
    print(f"  recovery          {recovery if recovery is None else f'{recovery:.2f}'}s (removed -> first new message)")
    print(f"  /healthz          {watch.checks} checks, slowest {watch.slowest:.3f}s, {len(watch.failures)} failed")

    assert_nothing_lost(report)
    # Every stored message is a distinct acked client_id: none stored twice.
    assert sum(len(seqs) for seqs in report.stored.values()) == sum(len(c.acked) for c in report.clients)
    assert watch.failures == [], "a process did not answer /healthz within a second"
    assert {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports} == pids  # none restarted
    assert outcome.ready_again_after is not None, "/readyz did not say ready again within 30 s"
    assert recovery is not None, "no message queued after the toxic was removed reached everyone"
    assert recovery <= RECOVERY_BOUND_SECONDS
    for port, (status, body, _) in outcome.readyz.items():
        assert status is not None, f":{port} /readyz did not answer within {fault.readyz_within}s: {body}"
    if fault.unready is not None:
        for port, (status, body, _) in outcome.readyz.items():
            assert status == 503, f":{port} /readyz answered {status} {body} while {fault.proxy} hung"
            assert body["checks"][fault.unready].startswith("unavailable"), body
            others = {name: value for name, value in body["checks"].items() if name != fault.unready}
            assert all(value == "ok" for value in others.values()), body  # and only that


@pytest.mark.parametrize(("proxy", "check"), [("redis", "broker"), ("database", "database")])
async def test_readyz_names_a_hung_service_within_2_seconds(
    proxied_deployment: Deployment, proxy: str, check: str
) -> None:
    toxiproxy = proxied_deployment.toxiproxy
    assert toxiproxy is not None
    url = f"http://127.0.0.1:{proxied_deployment.cluster.ports[0]}/readyz"
    with toxiproxy.toxic(proxy, "timeout", {"timeout": 0}, streams=BOTH_WAYS):
        await asyncio.sleep(READYZ_AFTER_SECONDS)
        status, body, seconds = await asyncio.to_thread(get_json, url, 2.0)
    print(f"\n{proxy} hangs: /readyz -> {status} in {seconds:.2f}s {body}")
    assert status == 503 and body["checks"][check].startswith("unavailable"), body


def test_toxiproxy_helper_adds_and_removes_toxics(proxied_deployment: Deployment) -> None:
    proxy: Toxiproxy | None = proxied_deployment.toxiproxy
    assert proxy is not None
    with proxy.toxic("redis", "latency", {"latency": 10}, streams=BOTH_WAYS):
        assert sorted(t["name"] for t in proxy.toxics("redis")) == ["latency_downstream", "latency_upstream"]
    assert proxy.toxics("redis") == []
