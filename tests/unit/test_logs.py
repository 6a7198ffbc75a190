"""Identical warnings and errors are written once per interval, then counted (finding 5)."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat import logs
from chat.config import ConfigError, load_settings
from chat.logs import ContextFilter, JsonFormatter, RepeatFilter
from chat.services import audit
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def records(clock: FakeClock) -> Iterator[tuple[logging.Logger, list[str]]]:
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(self.format(record))

    handler = Collect()
    handler.addFilter(RepeatFilter(interval=60, clock=clock))
    logger = logging.getLogger("test.repeats")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    yield logger, written
    logger.handlers = []


def test_the_first_of_identical_errors_is_written_and_the_rest_counted(
    records: tuple[logging.Logger, list[str]], clock: FakeClock
) -> None:
    logger, written = records
    for _ in range(50):
        logger.warning("bad frame from %s", "1.2.3.4")
    assert written == ["bad frame from 1.2.3.4"]

    clock.advance(61)
    logger.warning("bad frame from %s", "1.2.3.4")
    assert written[-1] == "bad frame from 1.2.3.4 [49 more like this in the last 61s]"

    logger.warning("bad frame from %s", "1.2.3.4")
    assert len(written) == 2


def test_different_errors_are_each_written(records: tuple[logging.Logger, list[str]]) -> None:
    logger, written = records
    logger.warning("bad frame from %s", "1.2.3.4")
    logger.warning("bad frame from %s", "5.6.7.8")
    logger.error("bad frame from %s", "1.2.3.4")
    assert len(written) == 3


def test_tracebacks_of_the_same_exception_are_collapsed(records: tuple[logging.Logger, list[str]]) -> None:
    logger, written = records
    for _ in range(3):
        try:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        except OverflowError:
            logger.exception("uncaught")
    assert len(written) == 1 and "OverflowError" in written[0]


def test_info_and_the_access_log_are_never_collapsed(clock: FakeClock) -> None:
    repeat = RepeatFilter(interval=60, clock=clock)

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "same line", (), None)

    assert all(repeat.filter(record("chat", logging.INFO)) for _ in range(3))
    assert all(repeat.filter(record("tornado.access", logging.WARNING)) for _ in range(3))


# -- CHAT_LOG_FORMAT=json, and the ids every line carries ----------------------


@pytest.fixture
def json_lines(clock: FakeClock) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the server's own handler set-up (context, repeats, JSON)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RepeatFilter(interval=60, clock=clock))
    logger = logging.getLogger("test.json")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    token = logs._context.set(logs._NOTHING_BOUND)
    yield logger, stream
    logs._context.reset(token)
    logger.handlers = []


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_and_message(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    logger.info("listening on %s", "http://127.0.0.1:8888")
    [line] = parsed(stream)
    assert line.keys() == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "test.json",
        "listening on http://127.0.0.1:8888",
    )
    when = datetime.datetime.fromisoformat(line["time"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs(when.timestamp() - time.time()) < 60


def test_a_json_line_carries_the_ids_bound_for_the_request(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    request_id = logs.bind_request("203.0.113.9")
    logs.bind(user_id="u1")
    logger.info("200 GET /rooms")
    line = parsed(stream)[0]
    assert line["request_id"] == request_id and len(request_id) == 16
    assert (line["client_ip"], line["user_id"]) == ("203.0.113.9", "u1")
    assert "connection_id" not in line


def test_a_new_request_forgets_what_the_last_one_bound(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    first = logs.bind_request("203.0.113.9")
    logs.bind(user_id="u1", connection_id="c1")
    second = logs.bind_request("198.51.100.1")
    logger.info("next")
    line = parsed(stream)[0]
    assert first != second == line["request_id"]
    assert "user_id" not in line and "connection_id" not in line


async def test_tasks_started_after_binding_carry_the_ids_and_do_not_leak_theirs(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines
    logs.bind_request("203.0.113.9")
    logs.bind(connection_id="c1", user_id="u1")

    async def frame_handler() -> None:  # as Tornado runs on_message: a task started from the socket's
        logger.warning("frame refused")
        logs.bind(user_id="someone else")

    await asyncio.create_task(frame_handler())
    logger.info("after")
    inside, after = parsed(stream)
    assert (inside["connection_id"], inside["user_id"]) == ("c1", "u1")
    assert after["user_id"] == "u1"


def test_bound_logs_as_another_context_and_restores_the_callers(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines
    logs.bind(connection_id="fanout")
    with logs.bound({"connection_id": "c7", "user_id": "u7"}):
        logger.info("socket_closed")
    logger.info("fan-out goes on")
    closed, goes_on = parsed(stream)
    assert (closed["connection_id"], closed["user_id"]) == ("c7", "u7")
    assert goes_on["connection_id"] == "fanout" and "user_id" not in goes_on


def test_exceptions_are_written_as_text(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    try:
        raise OverflowError("too large")
    except OverflowError:
        logger.exception("uncaught")
    line = parsed(stream)[0]
    assert line["message"] == "uncaught"
    assert line["exception"].startswith("Traceback") and "OverflowError: too large" in line["exception"]


def test_only_known_fields_are_written_whatever_a_record_carries(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines
    logger.info("login", extra={"password": "hunter2", "body": "secret text", "cookie": "abc"})
    assert "hunter2" not in stream.getvalue() and "secret text" not in stream.getvalue()
    assert parsed(stream)[0].keys() == {"time", "level", "logger", "message"}


def test_audit_events_are_written_as_fields(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    audit_log = logging.getLogger("chat.audit")
    saved = audit_log.handlers, audit_log.propagate, audit_log.level
    audit_log.handlers, audit_log.propagate, audit_log.level = logger.handlers, False, logging.INFO
    try:
        audit.event("limit_hit", action="send", key="u1", retry_after=2.5, absent=None, message='say "hi"\nx')
    finally:
        audit_log.handlers, audit_log.propagate, audit_log.level = saved
    line = parsed(stream)[0]
    assert line["message"].startswith("limit_hit action=send key=u1 retry_after=2.5")
    assert (line["event"], line["action"], line["key"], line["retry_after"]) == ("limit_hit", "send", "u1", 2.5)
    assert "absent" not in line
    # A field named like one of the line's own is kept apart, not overwriting it.
    assert line["field_message"] == 'say "hi"\nx'


def test_repeats_are_counted_in_json_lines_too(
    json_lines: tuple[logging.Logger, io.StringIO], clock: FakeClock
) -> None:
    logger, stream = json_lines
    for _ in range(5):
        logger.warning("bad frame from %s", "1.2.3.4")
    clock.advance(61)
    logger.warning("bad frame from %s", "1.2.3.4")
    assert [line["message"] for line in parsed(stream)] == [
        "bad frame from 1.2.3.4",
        "bad frame from 1.2.3.4 [4 more like this in the last 61s]",
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_writes_the_chosen_format_with_repeats_collapsed(log_format: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.configure(log_format, stream=stream)
        logs.configure(log_format, stream=stream)  # twice: still one handler
        for _ in range(3):
            logging.getLogger("chat.test").warning("database unavailable")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line)["message"] == "database unavailable"
    else:
        assert line.endswith(" WARNING chat.test: database unavailable")


def test_configure_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("xml")


def test_chat_log_format_is_text_unless_set_to_json(tmp_path: Path) -> None:
    secret = {"CHAT_COOKIE_SECRETS": "k" * 32}
    assert load_settings(secret, tmp_path / ".env").log_format == "text"
    assert load_settings({**secret, "CHAT_LOG_FORMAT": " JSON "}, tmp_path / ".env").log_format == "json"
    with pytest.raises(ConfigError, match="CHAT_LOG_FORMAT must be one of text, json, got 'xml'"):
        load_settings({**secret, "CHAT_LOG_FORMAT": "xml"}, tmp_path / ".env")
