"""Start and stop throwaway backing services (FerretDB on PostgreSQL, Redis, Toxiproxy) on free loopback ports.

Used by the soak tool and the tests; each instance keeps its files in a
directory of its own and can be stopped and started again on the same port,
which is how outages are simulated.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from chat.config import PROJECT_ROOT

FERRETDB_INSTALL_HINT = (
    "run `make ferretdb` (builds FerretDB v1.24.2 with Go into .cache/bin/ferretdb) or set CHAT_FERRETDB_BIN"
)

POSTGRES_INSTALL_HINT = "install PostgreSQL with `apt-get install postgresql` or set CHAT_POSTGRES_BINDIR"

TOXIPROXY_INSTALL_HINT = (
    "run `make toxiproxy` (builds Toxiproxy v2.5.0 with Go into .cache/bin/toxiproxy-server) or set CHAT_TOXIPROXY_BIN"
)


def locate(name: str, env_var: str, candidates: list[Path]) -> str | None:
    """A binary named by ``env_var``, else the first executable candidate, else on PATH."""
    configured = os.environ.get(env_var)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def ferretdb_path() -> str | None:
    return locate("ferretdb", "CHAT_FERRETDB_BIN", [PROJECT_ROOT / ".cache" / "bin" / "ferretdb"])


def postgres_bindir() -> str | None:
    """The directory of PostgreSQL's server programs: CHAT_POSTGRES_BINDIR, Debian's newest, or PATH's."""
    configured = os.environ.get("CHAT_POSTGRES_BINDIR")
    if configured:
        return configured if os.access(Path(configured) / "postgres", os.X_OK) else None
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3]))
    if installed:
        return str(installed[-1].parent)
    on_path = shutil.which("postgres")
    return str(Path(on_path).parent) if on_path else None


def toxiproxy_path() -> str | None:
    return locate("toxiproxy-server", "CHAT_TOXIPROXY_BIN", [PROJECT_ROOT / ".cache" / "bin" / "toxiproxy-server"])


def redis_server_path() -> str | None:
    return locate("redis-server", "CHAT_REDIS_SERVER_BIN", [Path("/usr/bin/redis-server")])


def nginx_path() -> str | None:
    return locate("nginx", "CHAT_NGINX_BIN", [Path("/usr/sbin/nginx")])


def fixed_ports() -> range:
    """Ports the system never hands out by itself: below (or above) its ephemeral range.

    A port picked from the ephemeral range and let go may be taken, before
    the service binds it, by any outgoing connection or ``bind(0)`` on the
    machine; with tests running in parallel, that happened. Outside the range
    only another picker can take it, and pickers choose at random.
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(10000, low) if low > 12000 else range(high + 1, 65536)


# Its own generator: Hypothesis seeds the global one, which made parallel test
# workers pick the same "random" ports.
_port_picker = random.SystemRandom()


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (for a process group), outside the ephemeral range."""
    ports = fixed_ports()
    for _ in range(200):
        base = _port_picker.randrange(ports.start, ports.stop - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


def free_port() -> int:
    """A free loopback port for a service to listen on, outside the ephemeral range (see :func:`fixed_ports`)."""
    return free_port_range(1)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def terminate(
    process: subprocess.Popen[bytes] | None, timeout: float = 10, first: signal.Signals = signal.SIGTERM
) -> None:
    """``first`` (SIGTERM), then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServiceProcess:
    """A child process listening on one loopback port, restartable on the same port and files.

    Subclasses say what to run (:meth:`command`) and may change how
    (:meth:`environment`, :attr:`cwd`) and when it counts as up
    (:meth:`ready`; by default, once its port accepts connections).
    """

    name = "service"
    log_name = "service.log"
    start_timeout = 20.0
    # Seconds between SIGTERM (or stop_signal) and SIGKILL when stopping.
    stop_timeout = 10.0
    stop_signal = signal.SIGTERM

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / self.log_name
        # None: the child runs where this process does.
        self.cwd: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's whole environment; None inherits this process's."""
        return None

    def popen_options(self) -> dict[str, Any]:
        """More for ``subprocess.Popen`` (who the child runs as, for one)."""
        return {}

    def ready(self) -> bool:
        """Whether the running process is ready to serve; polled by :meth:`start`."""
        return port_open(self.port)

    def start(self) -> Self:
        """Start (or start again, on the same port and files); return once it is ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                **self.popen_options(),
            )
        try:
            self._wait_ready()
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} on port {self.port} did not start ({exc}); log:\n{self.logs()}") from None
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}")
            if self.ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"not ready after {self.start_timeout}s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        terminate(self.process, timeout=self.stop_timeout, first=self.stop_signal)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        """Everything the process wrote so far, over all its starts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Down for the body of the ``with``, then up again on the same port and files.

        The restart happens even when the body raises: a test that fails
        mid-outage must not leave a session-wide service down for the tests
        after it.
        """
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# FerretDB's own compose file runs PostgreSQL with 400 connections; its pool takes most.
POSTGRES_MAX_CONNECTIONS = 400
FERRETDB_POOL_CONNECTIONS = 300


class PostgresServer(ServiceProcess):
    """A throwaway PostgreSQL cluster: initdb'd on first start, loopback only, trust for its one role.

    PostgreSQL refuses to run as root, so under root the cluster belongs to
    an unprivileged user (``postgres`` from Debian's package, else
    ``nobody``) and lives in a directory of its own under the system's
    temporary directory (a test's directory is root's alone), removed when
    this process exits. Durability is off: a throwaway cluster needs none,
    and the MongoDB stand-in's writes are faster for it.
    """

    name = "PostgreSQL"
    log_name = "postgres.log"
    role = "chat"
    # A fast shutdown: SIGTERM's smart one waits for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self, bindir: str, data_dir: Path, port: int | None = None) -> None:
        super().__init__(str(Path(bindir) / "postgres"), data_dir, port)
        self.bindir = Path(bindir)
        self.owner = _unprivileged_user() if os.geteuid() == 0 else None
        self.cluster_dir: Path | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{self.role}@127.0.0.1:{self.port}/{database}"

    def popen_options(self) -> dict[str, Any]:
        if self.owner is None:
            return {}
        return {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}

    def start(self) -> Self:
        if self.cluster_dir is None:
            self.cluster_dir = self._initdb()
        return super().start()

    def _initdb(self) -> Path:
        home = Path(tempfile.mkdtemp(prefix="chat-postgres-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        if self.owner is not None:
            os.chown(home, self.owner.pw_uid, self.owner.pw_gid)
        cluster = home / "cluster"
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(cluster),
                "--username",
                self.role,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            **self.popen_options(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return cluster

    def command(self) -> list[str]:
        assert self.cluster_dir is not None
        return [
            self.binary,
            "-D",
            str(self.cluster_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.cluster_dir.parent),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            f"max_connections={POSTGRES_MAX_CONNECTIONS}",
        ]

    def ready(self) -> bool:
        return (
            subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            ).returncode
            == 0
        )


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres or nobody) to run PostgreSQL as")


class FerretDB(ServiceProcess):
    """A FerretDB v1 server (MongoDB wire protocol) on a PostgreSQL cluster of its own (its default handler).

    Starting it starts its PostgreSQL first (made on the first start);
    stopping it stops both, so an outage is the whole database's.
    """

    name = "FerretDB"
    log_name = "ferretdb.log"

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        super().__init__(binary, data_dir, port)
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(f"FerretDB needs PostgreSQL: {POSTGRES_INSTALL_HINT}")
        self.postgres = PostgresServer(bindir, data_dir / "postgres")

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self) -> Self:
        if not self.postgres.running:
            self.postgres.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.postgres.stop()

    def command(self) -> list[str]:
        return [
            self.binary,
            "--handler=postgresql",
            # FerretDB v1 holds one PostgreSQL connection per statement of an
            # update command until the command ends: at its default pool of
            # 50, two processes' bulk updates wait for each other for good.
            f"--postgresql-url={self.postgres.url()}?pool_max_conns={FERRETDB_POOL_CONNECTIONS}",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--state-dir=-",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=warn",
        ]


class RedisServer(ServiceProcess):
    """A throwaway redis-server: no persistence, loopback only."""

    name = "redis-server"
    log_name = "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
        ]


class ToxiproxyError(RuntimeError):
    """Toxiproxy's API refused a request; the message has its answer."""


class Toxiproxy(ServiceProcess):
    """A Toxiproxy server: TCP proxies on loopback whose traffic can be made to misbehave.

    Driven through its HTTP API (``port`` is the API's); each proxy listens on
    a port of its own and forwards to an upstream. Toxics act on the
    connections a proxy already carries as well as on new ones, in one
    direction (``downstream``: from the upstream back to the client, or
    ``upstream``). Those used here:

    - ``latency``: ``{"latency": ms, "jitter": ms}`` added to every chunk of data
    - ``bandwidth``: ``{"rate": KB/s}``
    - ``timeout``: ``{"timeout": 0}`` drops all data and closes nothing, so the
      connection hangs; removing the toxic closes the connections it hung
    - ``reset_peer``: ``{"timeout": ms}`` resets (TCP RST) a connection once
      data arrives on it, after that long

    Proxies live in the server's memory: a restart forgets them.
    """

    name = "toxiproxy-server"
    log_name = "toxiproxy.log"

    def command(self) -> list[str]:
        return [self.binary, "-host", "127.0.0.1", "-port", str(self.port)]

    def ready(self) -> bool:
        try:
            self.request("GET", "/version")
        except OSError:
            return False
        return True

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call; its JSON answer (None for an empty one)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")  # /version answers plain text

    def create_proxy(self, name: str, upstream_port: int, listen_port: int | None = None) -> int:
        """A proxy named ``name`` from a free loopback port to 127.0.0.1:``upstream_port``; its port."""
        port = listen_port or free_port()
        self.request(
            "POST",
            "/proxies",
            {"name": name, "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{upstream_port}", "enabled": True},
        )
        return port

    def add_toxic(
        self,
        proxy: str,
        kind: str,
        attributes: dict[str, Any],
        *,
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> str:
        """Add a toxic of ``kind`` to ``proxy``'s ``stream``; its name (for :meth:`remove_toxic`)."""
        name = name or f"{kind}_{stream}"
        self.request(
            "POST",
            f"/proxies/{proxy}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes},
        )
        return name

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.request("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.request("GET", f"/proxies/{proxy}/toxics")
        return answer

    def reset(self) -> None:
        """Every proxy enabled again, every toxic gone."""
        self.request("POST", "/reset")

    @contextmanager
    def toxic(
        self, proxy: str, kind: str, attributes: dict[str, Any], *, streams: tuple[str, ...] = ("downstream",)
    ) -> Iterator[None]:
        """The toxic on each of ``streams`` for the body of the ``with``; removed even if the body raises."""
        added: list[str] = []
        try:
            for stream in streams:
                added.append(self.add_toxic(proxy, kind, attributes, stream=stream))
            yield
        finally:
            for name in added:
                self.remove_toxic(proxy, name)
