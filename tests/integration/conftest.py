"""Fixtures for the integration tier: a real chat server process per backend, and browsers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.client import Browser
from tests.support.logs import add_log_source
from tests.support.server import SHARED_SERVER_ENV, ChatServer, fresh_database_url


@pytest.fixture(scope="module", params=["sqlite", "mongodb"])
def chat_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One server per backend per test module."""
    tmp_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    with ChatServer(fresh_database_url(request.param, request, tmp_dir), tmp_dir, **SHARED_SERVER_ENV) as server:
        yield server


@pytest.fixture(autouse=True)
def _attach_server_logs(request: pytest.FixtureRequest) -> None:
    # Only where a test uses the shared server: asking for it would start one.
    if "chat_server" in request.fixturenames:
        server = request.getfixturevalue("chat_server")
        add_log_source(request, f"chat server {server.port}", server.logs)


@pytest.fixture
def browser(chat_server: ChatServer, open_browser: Callable[[str], Browser]) -> Browser:
    return open_browser(chat_server.base_url)


@pytest.fixture
def new_browser(chat_server: ChatServer, open_browser: Callable[[str], Browser]) -> Callable[[], Browser]:
    return lambda: open_browser(chat_server.base_url)
