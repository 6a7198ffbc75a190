"""Log configuration: plain text or one JSON object per line, with who and what each line is about.

Identical warnings and errors go out once per interval: a client repeating
the same bad request, or an outage hit by every request, would otherwise
write one line (or one traceback) per event. The first of a kind goes
through; repeats within the interval are counted, not written; the first one
after it goes through carrying the count ("... [41 more like this in the
last 60s]").

Every line can say which request or socket it is about: the web edge binds
``request_id``, ``client_ip``, ``user_id`` and ``connection_id`` in a context
variable (:func:`bind_request`, :func:`bind`), and asyncio copies it into
every task started from there, so lines logged while a socket's frames are
handled carry that socket's ids. ``CHAT_LOG_FORMAT=json`` writes them as
fields; the text format stays as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import secrets
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

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


# -- who a line is about -------------------------------------------------------

# The fields the edge binds, in the order JSON lines carry them.
CONTEXT_FIELDS = ("request_id", "connection_id", "user_id", "client_ip")
_NOTHING_BOUND: Mapping[str, str] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("chat_log_context", default=_NOTHING_BOUND)


def new_id() -> str:
    """A short random id for a request or a connection (64 bits: unique enough to grep for)."""
    return secrets.token_hex(8)


def bind_request(client_ip: str) -> str:
    """Start a fresh context for a new HTTP request: a new ``request_id``; return it.

    Replaces, not extends: whatever an earlier request on the same
    keep-alive connection bound is gone.
    """
    request_id = new_id()
    _context.set({"request_id": request_id, "client_ip": client_ip})
    return request_id


def bind(**fields: str) -> Mapping[str, str]:
    """Add ``fields`` (of :data:`CONTEXT_FIELDS`) to the current task's context; return the whole context."""
    context = {**_context.get(), **fields}
    _context.set(context)
    return context


@contextlib.contextmanager
def bound(context: Mapping[str, str]) -> Iterator[None]:
    """Log with exactly ``context`` inside the block (for callbacks that run in someone else's context)."""
    token = _context.set(context)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copy the bound ids onto each record (a field given with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# -- JSON lines ----------------------------------------------------------------

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attribute a record carries structured fields in (the audit log's
# key=value pairs): ``log.info(..., extra={FIELDS_ATTRIBUTE: {...}})``.
FIELDS_ATTRIBUTE = "chat_fields"
_RESERVED = frozenset({"time", "level", "logger", "message", "exception", "stack", *CONTEXT_FIELDS})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, written from an allow-list of fields.

    ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``; the bound
    ids when known; the record's structured fields (audit events);
    ``exception`` and ``stack`` when present. Nothing else a record happens
    to carry is written, so an attribute added anywhere cannot put a body or
    a token in the log by accident. (Our own rather than python-json-logger,
    which writes every extra attribute: the allow-list is the point, and it
    is this one class.)
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        extra = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                line[f"field_{key}" if key in _RESERVED else str(key)] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: str = "text", level: int = logging.INFO, stream: TextIO | None = None) -> RepeatFilter:
    """Send the process's log to ``stream`` (stderr) in ``log_format``; return the repeat filter.

    Replaces the root logger's handlers, so calling it twice does not double
    every line.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Whatever a client repeats, the log grows by one line per kind per minute.
    return install_repeat_filter()
