"""Start and stop throwaway backing services (FerretDB, Redis, Toxiproxy) on free loopback ports.

Used by the soak tool and the tests; each instance keeps its files in a
directory of its own and can be stopped and started again on the same port,
which is how outages are simulated.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
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


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (for a process group), outside the ephemeral range."""
    ports = fixed_ports()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
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


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
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
    # Seconds between SIGTERM and SIGKILL when stopping.
    stop_timeout = 10.0

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

    def ready(self) -> bool:
        """Whether the running process is ready to serve; polled by :meth:`start`."""
        return port_open(self.port)

    def start(self) -> Self:
        """Start (or start again, on the same port and files); return once it is ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.cwd, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
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

    def stop(self) -> None:
        terminate(self.process, timeout=self.stop_timeout)
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


class FerretDB(ServiceProcess):
    """A FerretDB v1 server (MongoDB wire protocol) with its SQLite handler."""

    name = "FerretDB"
    log_name = "ferretdb.log"

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
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
