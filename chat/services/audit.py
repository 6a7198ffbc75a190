"""The audit log: security events, one line each, on the ``chat.audit`` logger.

Each line is the event's name followed by ``key=value`` fields: user ids,
client addresses, reasons. Never message bodies, passwords, cookies or
session tokens (a session appears only as a short prefix of its stored hash,
enough to correlate lines). Values a client chose (a username typed at
sign-in) are quoted, so they cannot forge fields or lines.

Refusals a client can provoke as fast as it can send (a refused frame, a
refused handshake, a bad cookie) go through :func:`throttled`: the first of
a kind per key is written, then at most one a minute, carrying how many like
it were left out (``repeats=N``), so one socket cannot fill the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from ..logs import FIELDS_ATTRIBUTE

log = logging.getLogger("chat.audit")

# One line per kind and key per this many seconds at most (see throttled()).
THROTTLE_SECONDS = 60.0
# Kinds and keys remembered; the oldest is forgotten past it (and may be written again early).
THROTTLE_KEYS = 10_000

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]{1,128}")


def _value(value: object) -> str:
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text[:128])


def _field(value: object) -> object:
    """A field as a JSON log line carries it: numbers and flags as they are, the rest as short text."""
    return value if isinstance(value, bool | int | float) else str(value)[:128]


def event(name: str, **fields: object) -> None:
    """Record ``name`` with ``fields`` (None values are left out).

    The text line reads ``name key=value ...``; in JSON mode
    (``CHAT_LOG_FORMAT=json``) the line also carries ``event`` and each
    field as a field of its own.
    """
    present = {key: value for key, value in fields.items() if value is not None}
    log.info(
        "%s %s",
        name,
        " ".join(f"{key}={_value(value)}" for key, value in present.items()),
        extra={FIELDS_ATTRIBUTE: {"event": name, **{key: _field(value) for key, value in present.items()}}},
    )


def session_ref(session_key: str) -> str:
    """How a session is named in the log: a prefix of the hash it is stored under."""
    return session_key[:12]


class Throttle:
    """Lets the first event of each key through, then one per ``interval``, counting the rest."""

    def __init__(self, interval: float = THROTTLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        # key -> (when the last written one went out, how many were left out since)
        self._seen: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()

    def admit(self, key: tuple[str, ...]) -> int | None:
        """None to leave this one out; else how many were left out before it."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        while len(self._seen) > THROTTLE_KEYS:
            self._seen.popitem(last=False)
        return seen[1] if seen is not None else 0


_throttle = Throttle()


def throttled(name: str, *key: str, **fields: object) -> None:
    """Record ``name`` as :func:`event` does, but at most once per key per minute (with ``repeats``).

    For refusals a client can repeat as fast as it sends: the key says whose
    (an action and a user, an address), so one noisy client cannot hide another.
    """
    repeats = _throttle.admit((name, *key))
    if repeats is not None:
        event(name, **fields, repeats=repeats or None)
