"""Fixtures shared by every tier. Each service fixture starts and stops its own instance,
and chat servers run as real child processes on each storage backend."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.client import Browser
from tests.support.server import ChatServer
from tests.support.services import FerretDB, RedisServer, ferretdb_binary, redis_binary


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    """One FerretDB server for the whole run; tests isolate themselves by database name."""
    with FerretDB(ferretdb_binary(), tmp_path_factory.mktemp("ferretdb")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the whole run; tests isolate themselves by room id (channels are server-wide)."""
    with RedisServer(redis_binary(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url()


@pytest.fixture
def mongo_url(ferretdb: FerretDB) -> str:
    """A MongoDB URL naming a fresh, empty database on the shared FerretDB."""
    return ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chat.sqlite3"

# Generous limits on the shared server so tests can post quickly; the
# rate-limit test starts a server of its own with tight ones.
SHARED_SERVER_ENV = {
    "CHAT_RATE_LIMIT_BURST": "10000",
    "CHAT_RATE_LIMIT_PER_SECOND": "1000",
    "CHAT_SESSION_RECHECK_SECONDS": "0",
}


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_dir) -> str:  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir}/chat.sqlite3"
    ferretdb = request.getfixturevalue("ferretdb")
    return ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module", params=["sqlite", "mongodb"])
def chat_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One server per backend per test module."""
    tmp_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    with ChatServer(_database_url(request.param, request, tmp_dir), tmp_dir, **SHARED_SERVER_ENV) as server:
        yield server


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ChatServer]]:
    """Start servers with custom settings; each is stopped after the test."""
    started: list[ChatServer] = []

    def start(backend: str = "sqlite", database_url: str | None = None, **env: str) -> ChatServer:
        tmp_dir = tmp_path_factory.mktemp(f"server-{backend}")
        url = database_url or _database_url(backend, request, tmp_dir)
        server = ChatServer(url, tmp_dir, **{**SHARED_SERVER_ENV, **env})
        started.append(server)
        add_log_source(request, f"chat server {server.port}", server.logs)
        return server.start()

    yield start
    for server in started:
        server.stop()


def add_log_source(request: pytest.FixtureRequest, title: str, read: Callable[[], str]) -> None:
    """Show ``read()`` under ``title`` in the report if the test fails."""
    request.node.log_sources = [*getattr(request.node, "log_sources", []), (title, read)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # The servers' side of the story is usually what explains a failure.
        for title, read in getattr(item, "log_sources", []):
            report.sections.append((f"{title} log (tail)", read()[-8000:]))


@pytest.fixture(autouse=True)
def _attach_server_logs(request: pytest.FixtureRequest) -> None:
    if "chat_server" in request.fixturenames:
        server = request.getfixturevalue("chat_server")
        add_log_source(request, f"chat server {server.port}", server.logs)
    if "cluster" in request.fixturenames:
        cluster = request.getfixturevalue("cluster")
        add_log_source(request, "cluster", cluster.log_tail)


@pytest.fixture
def browser(chat_server: ChatServer) -> Browser:
    return Browser(chat_server.base_url)


@pytest.fixture
def new_browser(chat_server: ChatServer) -> Callable[[], Browser]:
    return lambda: Browser(chat_server.base_url)
