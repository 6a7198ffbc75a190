"""Real backing services for the tests, with the project's skip-or-fail rule.

A missing binary skips the tests that need it, naming the install command,
except under CI=true, where it fails them: CI must run everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chat.config import PROJECT_ROOT
from devtools.services import (
    FERRETDB_INSTALL_HINT,
    POSTGRES_INSTALL_HINT,
    TOXIPROXY_INSTALL_HINT,
    FerretDB,
    RedisServer,
    Toxiproxy,
    ferretdb_path,
    free_port,
    free_port_range,
    locate,
    nginx_path,
    postgres_bindir,
    redis_server_path,
    toxiproxy_path,
    wait_for_port,
)

__all__ = [
    "PROJECT_ROOT",
    "FerretDB",
    "RedisServer",
    "Toxiproxy",
    "ferretdb_binary",
    "find_binary",
    "free_port",
    "free_port_range",
    "missing_service",
    "nginx_binary",
    "redis_binary",
    "redis_cli_binary",
    "toxiproxy_binary",
    "wait_for_port",
]


def missing_service(message: str) -> None:
    """Skip (locally) or fail (under CI=true) because a service binary is missing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: missing services are failures, not skips)", pytrace=False)
    pytest.skip(message)


def find_binary(path: str | None, name: str, install_hint: str) -> str:
    if path is None:
        missing_service(f"{name} not found: {install_hint}")
        raise AssertionError("unreachable")
    return path


def ferretdb_binary() -> str:
    """FerretDB's binary, once PostgreSQL (which it runs on) is there too."""
    find_binary(postgres_bindir(), "PostgreSQL", POSTGRES_INSTALL_HINT)
    return find_binary(ferretdb_path(), "ferretdb", FERRETDB_INSTALL_HINT)


def redis_binary() -> str:
    return find_binary(redis_server_path(), "redis-server", "install it with `apt-get install redis-server`")


def redis_cli_binary() -> str:
    # Debian's redis-server package brings redis-cli (through redis-tools).
    path = locate("redis-cli", "CHAT_REDIS_CLI_BIN", [Path("/usr/bin/redis-cli")])
    return find_binary(path, "redis-cli", "install it with `apt-get install redis-server`")


def nginx_binary() -> str:
    return find_binary(nginx_path(), "nginx", "install it with `apt-get install nginx`")


def toxiproxy_binary() -> str:
    return find_binary(toxiproxy_path(), "toxiproxy-server", TOXIPROXY_INSTALL_HINT)
