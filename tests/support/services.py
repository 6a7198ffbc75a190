"""Start and stop real backing services (FerretDB, ...) on free loopback ports.

A missing binary skips the tests that need it, naming the install command,
except under CI=true, where it fails them: CI must run everything.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(count: int, start: int = 20000, stop: int = 60000) -> int:
    """The first of ``count`` consecutive free loopback ports (for a process group)."""
    import random

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


def missing_service(message: str) -> None:
    """Skip (locally) or fail (under CI=true) because a service binary is missing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: missing services are failures, not skips)", pytrace=False)
    pytest.skip(message)


def find_binary(name: str, env_var: str, candidates: list[Path], install_hint: str) -> str:
    configured = os.environ.get(env_var)
    if configured:
        if not os.access(configured, os.X_OK):
            missing_service(f"{env_var}={configured} is not an executable")
        return configured
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    missing_service(f"{name} not found: {install_hint}")
    raise AssertionError("unreachable")


class FerretDB:
    """A FerretDB v1 server (MongoDB wire protocol) with its SQLite handler."""

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / "ferretdb.log"

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (or start again, on the same port and files)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--handler=sqlite",
                f"--sqlite-url=file:{self.data_dir}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                "--state-dir=-",
                "--telemetry=disable",
                "--debug-addr=-",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.port, process=self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"FerretDB did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def nginx_binary() -> str:
    return find_binary("nginx", "CHAT_NGINX_BIN", [Path("/usr/sbin/nginx")], "install it with `apt-get install nginx`")


def ferretdb_binary() -> str:
    return find_binary(
        "ferretdb",
        "CHAT_FERRETDB_BIN",
        [PROJECT_ROOT / ".cache" / "bin" / "ferretdb"],
        "run `make ferretdb` (builds FerretDB v1.24.2 with Go into .cache/bin/ferretdb) or set CHAT_FERRETDB_BIN",
    )


class RedisServer:
    """A throwaway redis-server: no persistence, loopback only."""

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start (or start again, on the same port)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.data_dir),
                "--logfile", str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, process=self.process)
        except Exception:
            self.stop()
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"redis-server did not start; log:\n{log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def redis_binary() -> str:
    return find_binary("redis-server", "CHAT_REDIS_SERVER_BIN", [Path("/usr/bin/redis-server")],
                       "install it with `apt-get install redis-server`")
