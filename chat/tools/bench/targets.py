"""The servers a bench run measures: started by the bench, or already running.

- ``chat``: one chat process on the embedded default (SQLite + in-process
  broker), as ``make run`` starts it, with the abuse limits lifted;
- ``cluster``: the distributed deployment on this machine (supervisord with N
  chat processes, nginx, Redis, FerretDB on PostgreSQL), limits lifted;
- ``baseline``: the minimal Tornado broadcast of :mod:`.baseline`;
- a URL: servers somebody else started (their limits must allow the load).

The bench leans on the repository's ``devtools`` (free ports, FerretDB and
Redis for a cluster, signing users in), so it runs from a checkout, as
``make bench`` does.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import generate_secret, lifted_limits

# A bench is load, not abuse: every limit that would refuse it is lifted.
BENCH_ENV = {
    **lifted_limits(),
    "CHAT_BCRYPT_ROUNDS": "4",
    # Stalls are expected while thousands of sockets connect; logging each
    # would only slow the run.
    "CHAT_LOOP_STALL_SECONDS": "0",
}


def _wait_healthy(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy in {timeout:.0f} s")


def with_children(pid: int) -> list[int]:
    """A process and its children (nginx's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        found += [int(child) for child in children.read_text().split()]
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """:func:`cpu_seconds` of each process still there (a database's backend may exit meanwhile)."""
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


@dataclass
class Target:
    """Servers to measure; ``start()`` them, ``stop()`` what was started."""

    name: str
    # Where sockets connect (nginx for a cluster); ws URLs are derived from it.
    url: str = ""
    # Server processes whose memory and CPU the report shows.
    pids: list[int] = field(default_factory=list)
    # What serves the chat processes (nginx, Redis, the database): their CPU
    # is reported apart, to show which resource limited a figure.
    # Each a function: the processes may change during a run.
    infrastructure: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    # True when there are no accounts (the baseline): sockets need no cookie.
    anonymous: bool = False
    # Extra server environment (the levers measured on and off).
    env: Mapping[str, str] = field(default_factory=dict)
    # What the servers store in and publish through, for the ceilings (chat.tools.bench.ceilings).
    database_url: str | None = None
    broker_url: str | None = None
    scratch_dir: Path | None = None

    def start(self) -> None:
        """Nothing to start for servers somebody else runs."""

    def stop(self) -> None:
        """Nothing to stop either."""

    def restart(self) -> None:
        raise NotImplementedError(f"{self.name}: only a cluster target can be restarted by the bench")


@dataclass
class ProcessTarget(Target):
    """A single server process the bench starts and stops."""

    command: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    work_dir: Path | None = None

    def start(self) -> None:
        from devtools.services import free_port  # a checkout's tool, as the sign-in is

        port = free_port()
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        env = {
            **os.environ,
            "CHAT_PORT": str(port),
            "CHAT_COOKIE_SECRETS": generate_secret(),
            "CHAT_DATABASE_URL": f"sqlite:///{self.work_dir / 'chat.db'}",
            "CHAT_BROKER_URL": "memory://",
            **BENCH_ENV,
            **self.env,
        }
        self.database_url, self.scratch_dir = env["CHAT_DATABASE_URL"], self.work_dir
        log = (self.work_dir / "server.log").open("wb")
        command = [arg.replace("{port}", str(port)) for arg in self.command]
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        _wait_healthy(self.url, self.process)
        self.pids = [self.process.pid]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class ClusterTarget(Target):
    """supervisord + N chat processes + nginx + Redis + FerretDB on PostgreSQL, started by the bench."""

    processes: int = 2
    deployment: Any = None

    def start(self) -> None:
        try:
            from devtools.soak import Deployment  # a checkout's tool
        except ImportError as exc:
            raise RuntimeError("starting a cluster needs the repository's devtools: run from a checkout") from exc
        work_dir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        self.deployment = Deployment(work_dir, processes=self.processes, env={**BENCH_ENV, **self.env})
        self.deployment.start()
        self.url = self.deployment.url
        self.database_url = self.deployment.database.url("chat")
        self.broker_url = self.deployment.redis.url()
        self.scratch_dir = work_dir
        cluster = self.deployment.cluster
        self.pids = [cluster.process_pid(port) for port in cluster.ports]
        nginx = int((cluster.run_dir / "nginx.pid").read_text().strip())
        redis, ferretdb = self.deployment.redis.process.pid, self.deployment.database.process.pid
        postgres = self.deployment.database.postgres.process.pid
        self.infrastructure = {
            "nginx": lambda: with_children(nginx),
            "redis": lambda: [redis],
            "ferretdb": lambda: [ferretdb],
            # The postmaster and its children: a backend per connection.
            "postgresql": lambda: with_children(postgres),
        }

    def restart(self) -> None:
        """Restart every chat process at once (as a deployment does); return once they are back."""
        cluster = self.deployment.cluster
        cluster.supervisorctl("restart", "chat:*")
        self.pids = [cluster.process_pid(port) for port in cluster.ports]

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
            self.deployment = None


def make_target(spec: str, env: Mapping[str, str] | None = None, processes: int = 2) -> Target:
    """``chat``, ``cluster``, ``baseline`` or ``http://host:port`` (servers already running)."""
    env = dict(env or {})
    python = sys.executable
    if spec == "chat":
        return ProcessTarget("chat", env=env, command=[python, "-m", "chat", "--port", "{port}"])
    if spec == "baseline":
        return ProcessTarget(
            "baseline", env=env, anonymous=True, command=[python, "-m", "chat.tools.bench.baseline", "--port", "{port}"]
        )
    if spec == "cluster":
        return ClusterTarget(f"cluster x{processes}", env=env, processes=processes)
    if spec.startswith(("http://", "https://")):
        return Target(spec, url=spec.rstrip("/"))
    raise ValueError(f"unknown target {spec!r}: chat, cluster, baseline or an http(s):// URL")


def users_for(sockets: int, per_user: int = 10) -> int:
    """How many accounts hold ``sockets`` sockets without passing the default per-user cap."""
    return max(1, math.ceil(sockets / per_user))
