"""The real chat server for tests: in this process (the app on a thread of its own), or as a child process.

:class:`InProcessServer` serves what ``python -m chat`` serves, built by the
same code (:func:`chat.app.start_serving`: ``build_services``, ``make_app``,
the guarded HTTP server) on real loopback sockets, from a thread with its own
event loop: no interpreter to start, and a breakpoint in the server stops the
test. :class:`ChatServer` runs ``python -m chat`` as supervisord or ``make run``
does, for the tests whose subject is the process itself: start-up, signals,
shutdown, faults, its /metrics, its event loop's responsiveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, Self

import pytest

from chat import logs
from chat.app import Serving, start_serving
from chat.config import Settings, lifted_limits, load_settings
from chat.services import audit
from devtools.services import ServiceProcess, free_port

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


def server_environment(database_url: str, port: int, env: dict[str, str]) -> dict[str, str]:
    """What a test server reads as its environment: this process's, the test key, its database, then ``env``."""
    return {
        **os.environ,
        "CHAT_COOKIE_SECRETS": TEST_SECRET,
        "CHAT_DATABASE_URL": database_url,
        "CHAT_BROKER_URL": "memory://",
        "CHAT_INSTANCE_NAME": f"127.0.0.1:{port}",
        **env,
    }


class OnLoopback:
    """A server's addresses, from its port."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class ChatServer(OnLoopback, ServiceProcess):
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

    def command(self) -> list[str]:
        return [self.binary, "-m", "chat", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {**server_environment(self.database_url, self.port, self.env), "PYTHONPATH": str(PROJECT_ROOT)}

    def uncaught_errors(self) -> list[str]:
        return uncaught_errors_in(self.logs())

    def ready(self) -> bool:
        # Listening is not enough: /healthz answers once the app is built.
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


def uncaught_errors_in(log: str) -> list[str]:
    """Log lines that mean a request or frame reached a bug: tracebacks, uncaught exceptions, 500s."""
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or "Uncaught exception" in line or "access: 500 " in line or " ERROR " in line
    ]


# Which server's loop is reporting an asyncio error on this thread, if any.
_reporting = threading.local()


class ServerLog(logging.Handler):
    """The lines one in-process server logs, as its process would write them: the records of its thread.

    asyncio's errors are the exception: a task destroyed while pending or a
    client left unclosed is reported when the garbage collector finds it,
    on whichever thread it runs, so it may be another test's garbage. Those
    count where their loop reports them (:meth:`report`), whatever the thread.
    """

    def __init__(self, log_format: str) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.make_formatter(log_format))
        self.addFilter(self._ours)
        self.addFilter(logs.ContextFilter())
        self.addFilter(logs.RepeatFilter())
        self.threads: set[int | None] = set()
        self.lines: list[str] = []

    def _ours(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and record.levelno >= logging.ERROR:
            return getattr(_reporting, "log", None) is self
        return record.thread in self.threads

    def report(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The server loop's exception handler: asyncio's own report, counted as this server's."""
        _reporting.log = self
        try:
            loop.default_exception_handler(context)
        finally:
            _reporting.log = None

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class InProcessServer(OnLoopback):
    """The chat app on a free loopback port, served from a thread of this process; restartable on the same database."""

    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, database_url: str, work_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.work_dir = work_dir
        self.env = env
        self.port = free_port()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._log: ServerLog | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def settings(self) -> Settings:
        """What ``python -m chat --port PORT`` would read from the environment ChatServer gives it."""
        return load_settings(
            {**server_environment(self.database_url, self.port, self.env), "CHAT_PORT": str(self.port)}
        )

    def start(self) -> Self:
        settings = self.settings()
        if self._log is None:
            self._log = ServerLog(settings.log_format)
            # What the process's own log configuration would let through.
            for name in ("chat", "tornado"):
                logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger().addHandler(self._log)
        # What a new process starts without: the audit log's throttle (the one
        # piece of process-wide state a server keeps outside its services).
        audit._throttle = audit.Throttle()
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(settings, started, failure), name=f"chat-server-{self.port}", daemon=True
        )
        self._thread.start()
        if not started.wait(self.start_timeout) or failure:
            with contextlib.suppress(RuntimeError):  # still starting: the start's failure is the news
                self.stop()
            why = repr(failure[0]) if failure else f"not serving after {self.start_timeout}s"
            raise RuntimeError(f"chat server on port {self.port} did not start ({why}); log:\n{self.logs()}")
        return self

    def _run(self, settings: Settings, started: threading.Event, failure: list[BaseException]) -> None:
        assert self._log is not None
        self._log.threads.add(threading.get_ident())
        try:
            asyncio.run(self._serve(settings, started))
        except BaseException as exc:
            failure.append(exc)
            logging.getLogger("chat.app").exception("the server failed")
        finally:
            started.set()

    async def _serve(self, settings: Settings, started: threading.Event) -> None:
        assert self._log is not None
        asyncio.get_running_loop().set_exception_handler(self._log.report)
        serving: Serving = await start_serving(settings, watch_stalls=False)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        started.set()
        await self._stop.wait()
        await serving.stop()

    def stop(self) -> None:
        """Shut down as SIGTERM would (sockets told to go elsewhere, sends finished); wait for it."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is not None and thread.is_alive() and loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(self.stop_timeout)
            if thread.is_alive():
                raise RuntimeError(f"chat server on port {self.port} did not stop within {self.stop_timeout}s")
        self._thread = self._loop = self._stop = None
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        """Everything the server logged so far, over all its starts."""
        return "\n".join(self._log.lines) + "\n" if self._log is not None and self._log.lines else ""

    def uncaught_errors(self) -> list[str]:
        return uncaught_errors_in(self.logs())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Server(Protocol):
    """What tests use of a server, in this process or a child."""

    port: int
    database_url: str

    @property
    def running(self) -> bool: ...

    @property
    def base_url(self) -> str: ...

    @property
    def ws_base(self) -> str: ...

    def logs(self) -> str: ...

    def uncaught_errors(self) -> list[str]: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...


# The ``server_factory`` fixture: start a server on a backend with extra
# environment; ``child=True`` for a ``python -m chat`` child process.
ServerFactory = Callable[..., InProcessServer]
ChildServerFactory = Callable[..., ChatServer]
