"""Run the real chat server as a child process, the way supervisord or `make run` does."""

from __future__ import annotations

import os
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from chat.config import lifted_limits
from devtools.services import ServiceProcess

from .services import PROJECT_ROOT

TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"

# Abuse limits lifted, so tests (all from one address, many users and sockets)
# can work quickly; the tests of the limits start servers with tight ones.
LIFTED_LIMITS = lifted_limits()
# The shared servers also resume from further back than the default, for the
# tests that page through long histories (the bound has tests of its own), and
# hash passwords at bcrypt's lowest cost: every test browser registers, and at
# the default cost hashing was most of what the integration tests spent.
SHARED_SERVER_ENV = {
    **LIFTED_LIMITS,
    "CHAT_SESSION_RECHECK_SECONDS": "0",
    "CHAT_RESUME_MAX_MESSAGES": "5000",
    "CHAT_BCRYPT_ROUNDS": "4",
}


def fresh_database_url(backend: str, request: pytest.FixtureRequest, tmp_dir: Path) -> str:
    """An empty database: a SQLite file in ``tmp_dir``, or a new database on the session's FerretDB.

    FerretDB is asked for only when needed, so SQLite runs never start it.
    """
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir}/chat.sqlite3"
    ferretdb = request.getfixturevalue("ferretdb")
    return ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}")


class ChatServer(ServiceProcess):
    """One ``python -m chat`` process on a free port; restartable on the same database."""

    name = "chat server"
    start_timeout = 30.0
    # SIGTERM first so the server shuts down gracefully; it may take its
    # shutdown grace to finish sends being stored.
    stop_timeout = 15.0

    def __init__(self, database_url: str, work_dir: Path, **env: str) -> None:
        super().__init__(sys.executable, work_dir)
        self.database_url = database_url
        self.env = env
        self.log_path = work_dir / f"chat-{self.port}.log"
        self.cwd = work_dir  # a stray relative path must not land in the repo

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "-m", "chat", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "CHAT_COOKIE_SECRETS": TEST_SECRET,
            "CHAT_DATABASE_URL": self.database_url,
            "CHAT_BROKER_URL": "memory://",
            "CHAT_INSTANCE_NAME": f"127.0.0.1:{self.port}",
            **self.env,
            "PYTHONPATH": str(PROJECT_ROOT),
        }

    def uncaught_errors(self) -> list[str]:
        """Log lines that mean a request or frame reached a bug: tracebacks, uncaught exceptions, 500s."""
        return [
            line
            for line in self.logs().splitlines()
            if "Traceback" in line or "Uncaught exception" in line or "access: 500 " in line or " ERROR " in line
        ]

    def ready(self) -> bool:
        # Listening is not enough: /healthz answers once the app is built.
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


# The ``server_factory`` fixture: start a server on a backend with extra environment.
ServerFactory = Callable[..., ChatServer]
