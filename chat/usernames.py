"""The one rule for usernames, shared by accounts, mentions, forms and URLs.

Below every service: registration checks it, the renderer finds ``@name``
mentions with it, the page's ``pattern`` attribute and the URL table use it.
"""

from __future__ import annotations

import re

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
