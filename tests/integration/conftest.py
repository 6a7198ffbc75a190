"""Fixtures for the integration tier: a real chat server per backend (in this process), and browsers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.client import Browser
from tests.support.logs import add_log_source
from tests.support.server import SHARED_SERVER_ENV, InProcessServer, fresh_database_url

# Server-level tests run on SQLite: how storage behaves is proven on both
# backends by the storage contract suite. A module whose tests exercise a
# backend's own path through the server (its write path, its start-up) lists
# both in SERVER_BACKENDS.
DEFAULT_SERVER_BACKENDS = ("sqlite",)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chat_server" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "SERVER_BACKENDS", DEFAULT_SERVER_BACKENDS)
        metafunc.parametrize("chat_server", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def chat_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """One server per backend per test module (see SERVER_BACKENDS)."""
    tmp_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    url = fresh_database_url(request.param, request, tmp_dir)
    with InProcessServer(url, tmp_dir, **SHARED_SERVER_ENV) as server:
        yield server


@pytest.fixture(autouse=True)
def _attach_server_logs(request: pytest.FixtureRequest) -> None:
    # Only where a test uses the shared server: asking for it would start one.
    if "chat_server" in request.fixturenames:
        server = request.getfixturevalue("chat_server")
        add_log_source(request, f"chat server {server.port}", server.logs)


@pytest.fixture
def browser(chat_server: InProcessServer, open_browser: Callable[[str], Browser]) -> Browser:
    return open_browser(chat_server.base_url)


@pytest.fixture
def new_browser(chat_server: InProcessServer, open_browser: Callable[[str], Browser]) -> Callable[[], Browser]:
    return lambda: open_browser(chat_server.base_url)
