"""Logging that a flood cannot drown: identical warnings and errors once per interval.

A client repeating the same bad request, or an outage hit by every request,
would otherwise write one line (or one traceback) per event. The first of a
kind goes through; repeats within the interval are counted, not written; the
first one after it goes through carrying the count ("... [41 more like this
in the last 60s]").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_INTERVAL_SECONDS = 60.0
# The access log is one line per request by design (and nginx keeps its
# own); collapsing it would hide what happened.
UNFILTERED_LOGGERS = frozenset({"tornado.access"})
# Kinds remembered at once; past this the oldest are forgotten (a client
# cannot grow our memory by varying its errors).
MAX_KINDS = 1024

_Key = tuple[str, int, str, str, str]


class RepeatFilter(logging.Filter):
    """Let the first of identical records (``WARNING`` and up) through per interval, and count the rest.

    Identical means: same logger, level and message (after formatting), and
    the same exception type raised at the same place, if any.
    """

    def __init__(self, interval: float = REPEAT_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        # key -> (when the last written one went out, repeats suppressed since)
        self._seen: dict[_Key, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name in UNFILTERED_LOGGERS:
            return True
        key = _key(record)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            # Fold the count into the message itself, so every handler and
            # formatter shows it; args are consumed here.
            record.msg = f"{record.getMessage()} [{seen[1]} more like this in the last {now - seen[0]:.0f}s]"
            record.args = ()
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        while len(self._seen) > MAX_KINDS:
            del self._seen[next(iter(self._seen))]
        return True


def _key(record: logging.LogRecord) -> _Key:
    exc_type, where = "", ""
    if record.exc_info and record.exc_info[0] is not None:
        exc_type = record.exc_info[0].__qualname__
        tb = record.exc_info[2]
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
    return (record.name, record.levelno, record.getMessage(), exc_type, where)


def install_repeat_filter(interval: float = REPEAT_INTERVAL_SECONDS) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of the root logger (where records end up)."""
    repeat_filter = RepeatFilter(interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeat_filter)
    return repeat_filter
