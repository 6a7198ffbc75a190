"""Registration, sign-in and server-side sessions.

The browser holds only a signed cookie with a random session token; the
database holds a SHA-256 of that token. Signing out deletes the record, so a
copied cookie stops working at once, and a leaked database holds no usable
tokens.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets

from ..errors import Conflict, ValidationError
from ..models import Session, User, utcnow
from ..storage import Storage
from .passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, PasswordHasher

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32
# A regular-expression character class, valid both here and in an HTML
# ``pattern`` attribute (which browsers compile with the ``v`` flag, where a
# bare ``-`` in a class is an error).
USERNAME_CHARACTERS = r"A-Za-z0-9_.\-"
USERNAME_PATTERN = re.compile(f"[{USERNAME_CHARACTERS}]{{{USERNAME_MIN_LENGTH},{USERNAME_MAX_LENGTH}}}")
USERNAME_RULE = f"{USERNAME_MIN_LENGTH}-{USERNAME_MAX_LENGTH} characters: letters, digits, underscore, dot or hyphen"
# 256 bits of randomness; the issue asks for at least 128.
SESSION_TOKEN_BYTES = 32


def session_key(token: str) -> str:
    """The id under which a session token is stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class Accounts:
    def __init__(self, storage: Storage, hasher: PasswordHasher, session_max_age: int) -> None:
        self._storage = storage
        self._hasher = hasher
        self.session_max_age = session_max_age

    @staticmethod
    def validate_username(username: str) -> str:
        username = username.strip()
        if not USERNAME_PATTERN.fullmatch(username):
            raise ValidationError(f"Usernames are {USERNAME_RULE}.", field="username")
        return username

    @staticmethod
    def validate_password(password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.", field="password")
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            raise ValidationError(
                f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes (fewer if they use non-ASCII characters).",
                field="password",
            )

    async def register(self, username: str, password: str, confirmation: str) -> User:
        username = self.validate_username(username)
        self.validate_password(password)
        if password != confirmation:
            raise ValidationError("The two passwords do not match.", field="confirm")
        # Cheap early answer for the common case; the unique index decides races.
        if await self._storage.users.get_by_username(username) is not None:
            raise ValidationError("That username is taken.", field="username")
        password_hash = await self._hasher.hash(password)
        try:
            return await self._storage.users.add(username, password_hash)
        except Conflict:
            raise ValidationError("That username is taken.", field="username") from None

    async def authenticate(self, username: str, password: str) -> User:
        user = await self._storage.users.get_by_username(username.strip()) if username.strip() else None
        ok = await self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not ok:
            raise ValidationError("Wrong username or password.")
        return user

    async def start_session(self, user: User) -> str:
        """Create a session for ``user`` and return its (secret) token."""
        token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
        expires_at = utcnow() + datetime.timedelta(seconds=self.session_max_age)
        await self._storage.sessions.add(session_key(token), user.id, expires_at)
        return token

    async def resolve(self, token: str) -> tuple[Session, User] | None:
        """The live session and its user, or None when signed out or expired."""
        session = await self._storage.sessions.get(session_key(token))
        if session is None:
            return None
        user = await self._storage.users.get(session.user_id)
        if user is None:
            return None
        return session, user

    async def is_live(self, token: str) -> bool:
        return await self._storage.sessions.get(session_key(token)) is not None

    async def end_session(self, token: str) -> None:
        await self._storage.sessions.delete(session_key(token))
