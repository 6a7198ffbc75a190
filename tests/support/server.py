"""Run the real chat server as a child process, the way supervisord or `make run` does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools.services import terminate

from .services import PROJECT_ROOT, free_port

TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


class ChatServer:
    """One ``python -m chat`` process on a free port; restartable on the same database."""

    def __init__(self, database_url: str, work_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.work_dir = work_dir
        self.port = free_port()
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = work_dir / f"chat-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> "ChatServer":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CHAT_COOKIE_SECRETS": TEST_SECRET,
            "CHAT_DATABASE_URL": self.database_url,
            "CHAT_BROKER_URL": "memory://",
            "CHAT_INSTANCE_NAME": f"127.0.0.1:{self.port}",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat", "--port", str(self.port)],
            cwd=self.work_dir,  # a stray relative path must not land in the repo
            env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"chat server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"chat server not healthy after {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        terminate(self.process, timeout=15)  # SIGTERM first: the server shuts down gracefully
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
