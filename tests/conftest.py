"""Fixtures every tier may use: backing services, chat servers started on demand, and the
report hook that shows the servers' logs when a test fails.

Fixtures of one tier live in that tier's conftest.py; helpers the tiers share are in
``tests/support``. Each service fixture starts and stops its own instance.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import Browser
from tests.support.logs import add_log_source, log_sources
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.server import (
    SHARED_SERVER_ENV,
    ChatServer,
    ChildServerFactory,
    InProcessServer,
    ServerFactory,
    fresh_database_url,
)
from tests.support.services import FerretDB, RedisServer, ferretdb_binary, redis_binary, redis_cli_binary


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    """One 3-master Redis Cluster for the whole run, started only when a test asks for it.

    Tests isolate themselves by room id (channels and keys are cluster-wide);
    a test that kills a master starts it again with ``crash()``.
    """
    server, cli = redis_binary(), redis_cli_binary()
    with RedisClusterGroup(server, cli, tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterGroup) -> str:
    return redis_cluster.url()


@pytest.fixture
def mongo_url(ferretdb: FerretDB) -> str:
    """A MongoDB URL naming a fresh, empty database on the shared FerretDB."""
    return ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chat.sqlite3"


def _factory(
    kind: type[InProcessServer] | type[ChatServer],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Any]]:
    started: list[InProcessServer | ChatServer] = []

    def start(backend: str = "sqlite", database_url: str | None = None, **env: str) -> InProcessServer | ChatServer:
        tmp_dir = tmp_path_factory.mktemp(f"server-{backend}")
        url = database_url or fresh_database_url(backend, request, tmp_dir)
        server = kind(url, tmp_dir, **{**SHARED_SERVER_ENV, **env})
        started.append(server)
        add_log_source(request, f"chat server {server.port}", server.logs)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers in this process with custom settings; each is stopped after the test."""
    yield from _factory(InProcessServer, request, tmp_path_factory)


@pytest.fixture
def child_server_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildServerFactory]:
    """The same as ``python -m chat`` child processes: for tests whose subject is the process."""
    yield from _factory(ChatServer, request, tmp_path_factory)


@pytest.fixture
async def open_browser() -> AsyncIterator[Callable[[str], Browser]]:
    """Browsers on any server; every socket they open is closed after the test.

    Async so that the sockets close on the test's event loop, before it ends.
    """
    opened: list[Browser] = []

    def open_at(base_url: str) -> Browser:
        opened.append(Browser(base_url))
        return opened[-1]

    yield open_at
    for browser in opened:
        browser.close_sockets()


# Fixtures that make a test one of a kind, so that `make test-fast` can leave it out.
KIND_OF_FIXTURE = {
    "chromium": "browser",
    "cluster": "cluster",
    "strict_cluster": "cluster",
    "deployment": "cluster",
    "proxied_deployment": "cluster",
}
SOAK_MODULES = ("test_stress.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they start: a browser, a process group, a long load (see setup.cfg's markers)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for kind in {KIND_OF_FIXTURE[name] for name in fixtures if name in KIND_OF_FIXTURE}:
            item.add_marker(kind)
        if item.path.name in SOAK_MODULES or "soak" in item.name:
            item.add_marker("soak")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # The servers' side of the story is usually what explains a failure.
        for title, read in log_sources(item):
            report.sections.append((f"{title} log (tail)", read()[-8000:]))
