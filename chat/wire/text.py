"""Checks of text and numbers a client sends, shared by frames, forms and accounts.

Control characters and lone surrogates, the integers a client may send (a
seq), and the one rule for usernames (registration checks it, the renderer
finds ``@name`` mentions with it, the page's ``pattern`` attribute and the
URL table use it).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TypeGuard

# The largest integer a client may send (a seq): 2^53 - 1, the largest every
# JSON reader (JavaScript's included) holds exactly, and far inside the
# 64-bit integers SQLite and MongoDB store.
MAX_SAFE_INTEGER = 2**53 - 1

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32
# A regular-expression character class, valid both here and in an HTML
# ``pattern`` attribute (which browsers compile with the ``v`` flag, where a
# bare ``-`` in a class is an error).
USERNAME_CHARACTERS = r"A-Za-z0-9_.\-"
# A whole username, as a regular expression (Python, HTML ``pattern``, the URL table).
USERNAME_REGEX = f"[{USERNAME_CHARACTERS}]{{{USERNAME_MIN_LENGTH},{USERNAME_MAX_LENGTH}}}"
USERNAME_PATTERN = re.compile(USERNAME_REGEX)
USERNAME_RULE = f"{USERNAME_MIN_LENGTH}-{USERNAME_MAX_LENGTH} characters: letters, digits, underscore, dot or hyphen"


def has_control_characters(value: str, allowed: str = "") -> bool:
    """Whether ``value`` holds a control character (C0, DEL, C1) or a lone surrogate, other than ``allowed``.

    Lone surrogates come from JSON escapes like ``"\\ud800"``; they are not
    text and cannot be encoded to store or send.
    """
    return any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value)


def valid_seq(value: object) -> TypeGuard[int]:
    """A seq a client may send: an integer (not a bool) in 0..2^53-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER
