"""Identical warnings and errors are written once per interval, then counted (finding 5)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from chat.logs import RepeatFilter
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
