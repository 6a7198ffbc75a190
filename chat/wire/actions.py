"""What the abuse limits count, named once: the frames that are limited, the services that limit them, the settings.

Each action's rules are a setting (``CHAT_LIMIT_*``, chat.config) whose field
names the action; chat.services.limits counts them.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What is counted, and (in the comment) per what."""

    SEND = "send"  # per user
    SYNC_PER_SOCKET = "sync-socket"  # per socket
    SYNC_PER_USER = "sync-user"  # per user
    FETCH = "fetch"  # scroll-back pages, per user
    TYPING = "typing"  # typing notices, per user
    HANDSHAKE = "handshake"  # per user
    ROOM_CREATION = "room"  # per user
    ROOM_CHANGE = "room-change"  # renames and topics, per user
    DM_CREATION = "dm"  # new direct conversations, per user
    REGISTRATION = "register"  # per client address
    LOGIN = "login"  # attempts per client address
    LOGIN_FAILURE = "login-failure"  # per account name
