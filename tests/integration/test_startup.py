"""The real ``python -m chat`` at start-up: what stops it is its first line on stderr, saying what and how.

And in ``CHAT_LOG_FORMAT=json``, every line it writes is a JSON object
carrying the request's or the socket's ids, and none carries a message body,
a password, a cookie or a token.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.services import free_port
from tests.support.client import Browser
from tests.support.server import TEST_SECRET, ChatServer
from tests.support.services import PROJECT_ROOT

START_TIMEOUT_SECONDS = 30


def chat_environment(tmp_path: Path, **env: str) -> dict[str, str]:
    """A clean environment: nothing of the caller's CHAT_* settings, a SQLite file, the memory broker."""
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("CHAT_")},
        "CHAT_COOKIE_SECRETS": TEST_SECRET,
        "CHAT_DATABASE_URL": f"sqlite:///{tmp_path}/chat.sqlite3",
        "CHAT_BROKER_URL": "memory://",
        "CHAT_HOST": "127.0.0.1",
        "CHAT_LOG_FORMAT": "text",
        "PYTHONPATH": str(PROJECT_ROOT),
        **env,
    }


def run_chat(tmp_path: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m chat`` to the end (these ones refuse to start)."""
    return subprocess.run(
        [sys.executable, "-m", "chat", "--port", str(port)],
        env=chat_environment(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
    )


def first_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_port_in_use_is_one_line_saying_so_and_what_to_do(tmp_path: Path, taken_port: int) -> None:
    result = run_chat(tmp_path, taken_port)
    assert result.returncode == 1
    assert first_line(result.stderr) == (
        f"cannot start: port {taken_port} on 127.0.0.1 is in use: another chat process or program is listening "
        f"there (`ss -ltnp 'sport = :{taken_port}'` shows which); stop it or choose another with --port / CHAT_PORT"
    )
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"CHAT_DATABASE_URL": "mongodb://chat:hunter2@db.example:port/chat"},
            "configuration error: CHAT_DATABASE_URL=mongodb://chat:***@db.example:port/chat is malformed (",
            id="malformed-database-url",
        ),
        pytest.param(
            {"CHAT_DATABASE_URL": "postgres://chat:hunter2@db.example/chat"},
            "configuration error: CHAT_DATABASE_URL=postgres://chat:***@db.example/chat has an unsupported "
            "scheme (postgres://); use sqlite:///relative/path, sqlite:////absolute/path, mongodb://",
            id="unsupported-database-scheme",
        ),
        pytest.param(
            {"CHAT_BROKER_URL": "kafka://:hunter2@broker.example:9092"},
            "configuration error: CHAT_BROKER_URL=kafka://:***@broker.example:9092 has an unsupported scheme "
            "(kafka://); use memory:// (one process), redis://",
            id="unsupported-broker-scheme",
        ),
        pytest.param(
            {"CHAT_COOKIE_SECRETS": ""},
            "configuration error: CHAT_COOKIE_SECRETS is not set. `make run` creates one in .env; "
            "elsewhere generate one with `python -m chat.tools.secret` and set it.",
            id="missing-secret",
        ),
        pytest.param(
            {"CHAT_COOKIE_SECRETS": "hunter2"},
            "configuration error: CHAT_COOKIE_SECRETS: the key is 7 characters; each must be at least 32 "
            "characters. Generate one with `python -m chat.tools.secret`",
            id="weak-secret",
        ),
        pytest.param(
            {"CHAT_LOG_FORMAT": "xml"},
            "configuration error: CHAT_LOG_FORMAT must be one of text, json, got 'xml'",
            id="unknown-log-format",
        ),
    ],
)
def test_a_configuration_error_is_one_line_naming_the_setting_and_the_fix(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = run_chat(tmp_path, free_port(), **env)
    assert result.returncode == 2
    assert first_line(result.stderr).startswith(expected)
    assert len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


def test_in_json_mode_a_refusal_is_a_json_line(tmp_path: Path, taken_port: int) -> None:
    result = run_chat(tmp_path, taken_port, CHAT_LOG_FORMAT="json")
    assert result.returncode == 1
    line = json.loads(first_line(result.stderr))
    assert line["level"] == "CRITICAL" and line["message"].startswith(f"cannot start: port {taken_port} on ")


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@pytest.mark.parametrize(
    ("env", "expected", "fix"),
    [
        pytest.param(
            {"CHAT_BROKER_URL": "redis://:hunter2@127.0.0.1:{port}/0"},
            "WARNING chat.startup: Redis unreachable at 127.0.0.1:{port} (connection refused): "
            "is redis-server running?",
            'Check that `redis-cli -u "$CHAT_BROKER_URL" ping` answers PONG',
            id="redis",
        ),
        pytest.param(
            {"CHAT_DATABASE_URL": "mongodb://127.0.0.1:{port}/chat?serverSelectionTimeoutMS=500"},
            "WARNING chat.startup: MongoDB unreachable at 127.0.0.1:{port} (connection refused): is mongod running?",
            "and that CHAT_DATABASE_URL=mongodb://127.0.0.1:{port}/chat?serverSelectionTimeoutMS=500 names it",
            id="mongodb",
        ),
    ],
)
def test_an_unreachable_backing_service_is_one_warning_first_and_the_process_serves_on(
    tmp_path: Path, env: dict[str, str], expected: str, fix: str
) -> None:
    # Serving on (pages 503, sends stored or refused) and reconnecting, as
    # under supervisord a process must not exit and crash-loop into FATAL.
    port = closed_port()
    env = {key: value.format(port=port) for key, value in env.items()}
    server = ChatServer(env.get("CHAT_DATABASE_URL", f"sqlite:///{tmp_path}/chat.sqlite3"), tmp_path, **env)
    with server:  # started: /healthz answers 200 (ChatServer.ready)
        assert server.ready()
    lines = server.logs().splitlines()
    assert "Traceback" not in lines[0]
    assert lines[0].split(" ", 2)[2].startswith(expected.format(port=port)), lines[0]
    assert fix.format(port=port) in lines[0]
    assert "hunter2" not in server.logs()
    # It served until told to stop, then stopped as usual.
    assert re.search(r"INFO chat.app: shut down in [0-9.]+ s$", lines[-1]), lines[-1]
    assert "Traceback" not in server.logs()


# -- CHAT_LOG_FORMAT=json ---------------------------------------------------------


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[ChatServer]:
    # Typing notices limited to one a minute: the second one on a socket is
    # refused, and logged (limit_hit) while that socket's frame is handled.
    with ChatServer(
        f"sqlite:///{tmp_path}/chat.sqlite3", tmp_path, CHAT_LOG_FORMAT="json", CHAT_LIMIT_TYPING="1 per minute"
    ) as server:
        yield server


async def wait_for_line(server: ChatServer, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(100):
        for line in server.logs().splitlines():
            with_fields = json.loads(line)
            if wanted(with_fields):
                return dict(with_fields)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such line in:\n{server.logs()}")


async def test_json_lines_carry_request_and_socket_ids_and_no_secrets(
    json_server: ChatServer, open_browser: Callable[[str], Browser]
) -> None:
    browser = open_browser(json_server.base_url)
    password = f"pw-{uuid.uuid4().hex}"
    body = f"a private message {uuid.uuid4().hex}"
    await browser.register(password=password)
    room_id = await browser.create_room()
    page = await browser.get(f"/rooms/{room_id}")
    assert page.code == 200
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.acked(await sock.send_message(body))
    await sock.send_json({"type": "typing"})
    await sock.send_json({"type": "typing"})  # over the limit: logged
    limit_hit = await wait_for_line(json_server, lambda line: line.get("event") == "limit_hit")
    sock.close()
    closed = await wait_for_line(json_server, lambda line: line.get("event") == "socket_closed")
    secrets_seen = {
        "password": password,
        "body": body,
        **{f"cookie {name}": value for name, value in browser.cookies.items()},
    }
    json_server.stop()

    lines = [json.loads(line) for line in json_server.logs().splitlines()]  # every line parses
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert datetime.datetime.fromisoformat(line["time"]).utcoffset() == datetime.timedelta(0)

    [access] = [
        line
        for line in lines
        if line["logger"] == "tornado.access" and line["message"].startswith(f"200 GET /rooms/{room_id} ")
    ]
    assert access["client_ip"] == "127.0.0.1" and len(access["request_id"]) == 16
    user_id = access["user_id"]

    [opened] = [line for line in lines if line.get("event") == "socket_opened"]
    assert (opened["user_id"], opened["user"], opened["room"]) == (user_id, user_id, room_id)
    connection_id = opened["connection_id"]
    assert connection_id and opened["request_id"] != access["request_id"]
    # The socket's ids on what its frames caused (a task of its own) and on its closing.
    for line in (limit_hit, closed):
        assert (line["connection_id"], line["user_id"], line["client_ip"]) == (connection_id, user_id, "127.0.0.1")
    assert limit_hit["action"] == "typing"
    # Requests without a session carry no user; each request its own id.
    registered = [line for line in lines if line["message"].startswith("302 POST /register ")]
    assert len(registered) == 1 and registered[0]["user_id"] == user_id  # known once signed in
    request_ids = [line["request_id"] for line in lines if line["logger"] == "tornado.access"]
    assert len(request_ids) == len(set(request_ids))

    text = json_server.logs()
    for what, secret in secrets_seen.items():
        assert secret not in text, f"the {what} is in the log"
