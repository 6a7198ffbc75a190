"""Start and stop throwaway backing services (FerretDB, Redis) on free loopback ports.

Used by the soak tool and the tests; each instance keeps its files in a
directory of its own and can be stopped and started again on the same port,
which is how outages are simulated.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from chat.config import PROJECT_ROOT

FERRETDB_INSTALL_HINT = (
    "run `make ferretdb` (builds FerretDB v1.24.2 with Go into .cache/bin/ferretdb) or set CHAT_FERRETDB_BIN"
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


def redis_server_path() -> str | None:
    return locate("redis-server", "CHAT_REDIS_SERVER_BIN", [Path("/usr/bin/redis-server")])


def nginx_path() -> str | None:
    return locate("nginx", "CHAT_NGINX_BIN", [Path("/usr/sbin/nginx")])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(count: int, start: int = 20000, stop: int = 60000) -> int:
    """The first of ``count`` consecutive free loopback ports (for a process group)."""
    for _ in range(200):
        base = random.randrange(start, stop - count)
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


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def terminate(process: subprocess.Popen | None, timeout: float = 10) -> None:
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
    """A child process listening on one loopback port, restartable on the same port and files."""

    name = "service"
    log_name = "service.log"

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / self.log_name

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start (or start again, on the same port and files); return once it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, process=self.process)
        except Exception:
            self.stop()
            log_text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"{self.name} did not start; log:\n{log_text}") from None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

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
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
        ]
