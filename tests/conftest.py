"""Fixtures shared by every tier. Each service fixture starts and stops its own instance."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.services import FerretDB, ferretdb_binary


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    """One FerretDB server for the whole run; tests isolate themselves by database name."""
    server = FerretDB(ferretdb_binary(), tmp_path_factory.mktemp("ferretdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mongo_url(ferretdb: FerretDB) -> str:
    """A MongoDB URL naming a fresh, empty database on the shared FerretDB."""
    return ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chat.sqlite3"
