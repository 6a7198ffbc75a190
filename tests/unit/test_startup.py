"""Start-up checks: what keeps a process from serving is one line saying what and how to fix it."""

from __future__ import annotations

import errno
import io
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chat import startup
from chat.config import ConfigError, Settings
from chat.startup import StartupError

SETTINGS = Settings(cookie_secrets=("k" * 32,))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://chat:hunter2@db1:27017,db2:27017/chat", "mongodb://chat:***@db1:27017,db2:27017/chat"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:hun@ter2@cache:6380", "rediss://default:***@cache:6380"),
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
        (
            "nodes must be host:port in 'redis+cluster://u:hunter2@h'",
            "nodes must be host:port in 'redis+cluster://u:***@h'",
        ),
        ("sqlite:///data/chat.sqlite3", "sqlite:///data/chat.sqlite3"),
        ("memory://", "memory://"),
    ],
)
def test_passwords_in_urls_are_masked(url: str, shown: str) -> None:
    assert startup.mask_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///data/chat.sqlite3",
        "sqlite:////var/lib/chat/chat.sqlite3",
        "sqlite:///:memory:",
        "mongodb://127.0.0.1:27017/chat?w=majority&journal=true",
        "mongodb://chat:pw@db1:27017,db2:27018/chat?replicaSet=rs0",
        "mongodb+srv://cluster0.example.org/chat",
    ],
)
def test_database_urls_the_server_can_open_pass(url: str) -> None:
    startup.check_database_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://chat:hunter2@db/chat", "CHAT_DATABASE_URL=postgres://chat:***@db/chat has an unsupported scheme"),
        ("sqlite://chat.db", "CHAT_DATABASE_URL=sqlite://chat.db is malformed (a SQLite URL is sqlite:///"),
        ("sqlite:///", "is malformed"),
        ("mongodb://chat:hunter2@db:port/chat", "CHAT_DATABASE_URL=mongodb://chat:***@db:port/chat is malformed"),
        ("mongodb://", "is malformed"),
        ("data/chat.sqlite3", "CHAT_DATABASE_URL=data/chat.sqlite3 is not a URL"),
    ],
)
def test_a_malformed_database_url_names_the_variable_and_the_accepted_forms(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        startup.check_database_url(url)
    message = str(refused.value)
    assert message.startswith("CHAT_DATABASE_URL=") and problem in message
    assert message.endswith(f"; use {startup.DATABASE_FORMS}")
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://127.0.0.1:6379/0",
        "redis://:pw@cache",
        "rediss://cache.example.org:6380",
        "unix:///run/redis/redis.sock",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
    ],
)
def test_broker_urls_the_server_can_use_pass(url: str) -> None:
    startup.check_broker_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("kafka://broker:9092", "CHAT_BROKER_URL=kafka://broker:9092 has an unsupported scheme (kafka://)"),
        ("redis://:hunter2@cache:99999", "CHAT_BROKER_URL=redis://:***@cache:99999 is malformed"),
        ("redis://cache:6379/zero", "is malformed (the database after the host must be a number"),
        ("unix://", "is malformed (no socket path)"),
        ("redis+cluster://u:hunter2@10.0.0.1,10.0.0.2:7001", "is malformed (Redis Cluster nodes must be host:port"),
        ("127.0.0.1:6379", "is not a URL"),
    ],
)
def test_a_malformed_broker_url_names_the_variable_and_the_accepted_forms(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        startup.check_broker_url(url)
    message = str(refused.value)
    assert message.startswith("CHAT_BROKER_URL=") and problem in message
    assert message.endswith(f"; use {startup.BROKER_FORMS}")
    assert "hunter2" not in message


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_in_use_is_refused_with_what_to_do(listener: int) -> None:
    with pytest.raises(StartupError) as refused:
        startup.check_port("127.0.0.1", listener)
    assert str(refused.value) == (
        f"port {listener} on 127.0.0.1 is in use: another chat process or program is listening there "
        f"(`ss -ltnp 'sport = :{listener}'` shows which); stop it or choose another with --port / CHAT_PORT"
    )
    assert refused.value.exit_code == startup.EXIT_CANNOT_LISTEN


def test_a_free_port_passes_and_stays_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    startup.check_port("127.0.0.1", port)
    startup.check_port("127.0.0.1", port)  # let go of: a second check (and the server) can bind it
    startup.check_port("127.0.0.1", 0)


def test_an_address_not_of_this_machine_is_a_configuration_error() -> None:
    refused = startup.listen_error(OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "10.99.99.99", 8001)
    assert str(refused).startswith("10.99.99.99 is not an address of this machine")
    assert "--host / CHAT_HOST" in str(refused) and refused.exit_code == startup.EXIT_CONFIG


def test_a_privileged_port_says_to_use_a_high_one() -> None:
    refused = startup.listen_error(OSError(errno.EACCES, "Permission denied"), "0.0.0.0", 80)
    assert "needs root" in str(refused) and "--port / CHAT_PORT" in str(refused)


def test_check_refuses_the_urls_before_the_port(listener: int) -> None:
    with pytest.raises(ConfigError, match="CHAT_BROKER_URL"):
        startup.check(replace(SETTINGS, broker_url="kafka://b", port=listener))
    with pytest.raises(StartupError, match="is in use"):
        startup.check(replace(SETTINGS, port=listener))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_database_and_broker_are_each_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    settings = replace(
        SETTINGS, database_url=f"mongodb://chat:hunter2@127.0.0.1:{port}/chat", broker_url=f"redis://127.0.0.1:{port}"
    )
    with caplog.at_level(logging.WARNING, logger="chat.startup"):
        warnings = await startup.warn_unreachable(settings, timeout=2)
    database, broker = warnings
    assert database.startswith(f"MongoDB unreachable at 127.0.0.1:{port} (connection refused): is mongod running?")
    assert f"CHAT_DATABASE_URL=mongodb://chat:***@127.0.0.1:{port}/chat" in database
    assert broker.startswith(f"Redis unreachable at 127.0.0.1:{port} (connection refused): is redis-server running?")
    assert 'redis-cli -u "$CHAT_BROKER_URL" ping' in broker
    assert [record.getMessage() for record in caplog.records] == warnings
    assert "hunter2" not in caplog.text


async def test_one_answering_member_of_a_replica_set_is_enough(listener: int) -> None:
    settings = replace(SETTINGS, database_url=f"mongodb://127.0.0.1:{closed_port()},127.0.0.1:{listener}/chat")
    assert await startup.warn_unreachable(settings, timeout=2) == []


async def test_embedded_backends_are_not_probed() -> None:
    assert await startup.warn_unreachable(SETTINGS) == []
    assert startup.database_doors("mongodb+srv://cluster0.example.org/chat") == []


async def test_a_missing_redis_socket_file_is_said_so(tmp_path: Path) -> None:
    path = f"{tmp_path}/redis.sock"
    [warning] = await startup.warn_unreachable(replace(SETTINGS, broker_url=f"unix://{path}"))
    assert warning.startswith(f"Redis unreachable at {path} (no such socket)")
    assert f"redis-cli -s {path} ping" in warning


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_refusal_is_one_line_in_either_format(log_format: str) -> None:
    stream = io.StringIO()
    startup.fail("cannot start: port 8001 on 127.0.0.1 is in use", log_format, stream)
    [line] = stream.getvalue().splitlines()
    if log_format == "json":
        fields = json.loads(line)
        assert (fields["level"], fields["logger"]) == ("CRITICAL", "chat.startup")
        assert fields["message"] == "cannot start: port 8001 on 127.0.0.1 is in use"
    else:
        assert line == "cannot start: port 8001 on 127.0.0.1 is in use"
