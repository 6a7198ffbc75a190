"""The Jinja2 environment, and the limits pages and the browser client learn from the server.

Templates and ``static/chat.js`` never copy a limit or a wire constant: the
values below come from the services and the protocol module, and reach the
templates as globals (``limits``, ``client_config``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from ..config import Settings
from ..models import Message, isoformat
from ..services.conversation.formatting import for_reader
from ..services.conversation.messages import MAX_BODY_LENGTH
from ..services.identity.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH
from ..services.rooms.catalog import MAX_ROOM_NAME_LENGTH, MAX_TOPIC_LENGTH
from ..wire.client import FETCH_DEFAULT_LIMIT
from ..wire.refusals import Close
from ..wire.text import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, USERNAME_REGEX


@dataclass(frozen=True)
class FormLimits:
    """Validation limits the forms show and pre-check; the services enforce them."""

    username_min: int = USERNAME_MIN_LENGTH
    username_max: int = USERNAME_MAX_LENGTH
    username_pattern: str = USERNAME_REGEX
    password_min: int = MIN_PASSWORD_LENGTH
    password_max_bytes: int = MAX_PASSWORD_BYTES
    room_name_max: int = MAX_ROOM_NAME_LENGTH
    topic_max: int = MAX_TOPIC_LENGTH
    body_max: int = MAX_BODY_LENGTH


# Consecutive messages of one author this close together sit under one name.
GROUP_WITHIN = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class MessageRow:
    """A message as the list shows it: under the last one's name or not, and the day it starts, if any."""

    message: Message
    continued: bool
    day: str | None


def message_rows(messages: Sequence[Message]) -> list[MessageRow]:
    """Group and date a page of messages the way static/chat.js does (here in UTC; the script redoes it locally)."""
    rows: list[MessageRow] = []
    previous: Message | None = None
    for message in messages:
        day = message.created_at.astimezone(datetime.UTC).date()
        new_day = previous is None or previous.created_at.astimezone(datetime.UTC).date() != day
        continued = (
            previous is not None
            and not new_day
            and previous.user_id == message.user_id
            and message.created_at - previous.created_at <= GROUP_WITHIN
        )
        rows.append(MessageRow(message, continued, day.strftime("%A %d %B %Y") if new_day else None))
        previous = message
    return rows


def client_config() -> dict[str, Any]:
    """What ``static/chat.js`` needs to know, rendered into the room page as ``data-config``."""
    return {
        "maxBodyLength": MAX_BODY_LENGTH,
        "fetchLimit": FETCH_DEFAULT_LIMIT,
        "groupWithinSeconds": int(GROUP_WITHIN.total_seconds()),
        "close": {
            "sessionEnded": int(Close.SESSION_ENDED),
            "goingAway": int(Close.GOING_AWAY),
            "tryAgainLater": int(Close.TRY_AGAIN_LATER),
            "removed": int(Close.REMOVED),
        },
    }


def make_jinja_env(settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(settings.template_path)),
        autoescape=True,
        auto_reload=settings.debug,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(
        isoformat=isoformat,
        limits=FormLimits(),
        client_config=client_config(),
        for_reader=for_reader,
        message_rows=message_rows,
    )
    return env
