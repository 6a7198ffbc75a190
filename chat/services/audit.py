"""The audit log: security events, one line each, on the ``chat.audit`` logger.

Each line is the event's name followed by ``key=value`` fields: user ids,
client addresses, reasons. Never message bodies, passwords, cookies or
session tokens (a session appears only as a short prefix of its stored hash,
enough to correlate lines). Values a client chose (a username typed at
sign-in) are quoted, so they cannot forge fields or lines.
"""

from __future__ import annotations

import json
import logging
import re

from ..logs import FIELDS_ATTRIBUTE

log = logging.getLogger("chat.audit")

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
