"""The session cookie: a random session token, signed and timestamped by itsdangerous.

The signature stops forgery; the timestamp enforces ``max_age`` even if a
browser ignores the cookie's expiry; the token itself names a server-side
session record, which is what makes signing out final. Several keys are
accepted so they can be rotated: the last one signs, all of them verify.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from itsdangerous import BadData, URLSafeTimedSerializer

COOKIE_NAME = "chat_session"
_SALT = "chat.session-cookie"


class CookieAttributes(TypedDict):
    httponly: bool
    samesite: Literal["Lax"]
    secure: bool
    max_age: int
    path: str


class SessionCookie:
    def __init__(self, secret_keys: tuple[str, ...], max_age: int, secure: bool) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=_SALT)
        self.max_age = max_age
        self.secure = secure

    def encode(self, token: str) -> str:
        return self._serializer.dumps(token)

    def decode(self, value: str | None) -> str | None:
        """The token inside a cookie value; None if absent, tampered, foreign or expired."""
        if not value:
            return None
        try:
            token = self._serializer.loads(value, max_age=self.max_age)
        except BadData:  # bad signature, bad timestamp, expired, garbled payload
            return None
        return token if isinstance(token, str) and token else None

    def attributes(self) -> CookieAttributes:
        return {"httponly": True, "samesite": "Lax", "secure": self.secure, "max_age": self.max_age, "path": "/"}
