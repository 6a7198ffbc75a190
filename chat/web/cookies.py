"""The session cookie: a random session token, signed and timestamped by itsdangerous.

The signature stops forgery; the timestamp enforces ``max_age`` even if a
browser ignores the cookie's expiry; the token itself names a server-side
session record, which is what makes signing out final. Several keys are
accepted so they can be rotated: the last one signs, all of them verify.

Over HTTPS (``CHAT_COOKIE_SECURE``) the cookie is ``Secure`` and named with
the ``__Host-`` prefix, which browsers accept only from a secure origin,
with ``Path=/`` and no ``Domain``: a sibling subdomain or a plain-HTTP
response cannot plant or overwrite it. Local plain-HTTP runs keep the bare
name, since browsers refuse ``__Host-`` cookies there (except on localhost).
"""

from __future__ import annotations

from typing import Literal, TypedDict

from itsdangerous import BadData, URLSafeTimedSerializer

COOKIE_NAME = "chat_session"
SECURE_PREFIX = "__Host-"
SECURE_COOKIE_NAME = SECURE_PREFIX + COOKIE_NAME
# Tornado's XSRF cookie, named the same way (its ``xsrf_cookie_name`` setting).
XSRF_COOKIE_NAME = "_xsrf"
SECURE_XSRF_COOKIE_NAME = SECURE_PREFIX + XSRF_COOKIE_NAME
_SALT = "chat.session-cookie"


class CookieAttributes(TypedDict):
    httponly: bool
    samesite: Literal["Lax"]
    secure: bool
    max_age: int
    path: str


class XsrfCookieAttributes(TypedDict):
    httponly: bool
    samesite: Literal["Lax"]
    secure: bool
    path: str


class SessionCookie:
    def __init__(self, secret_keys: tuple[str, ...], max_age: int, secure: bool) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=_SALT)
        self.max_age = max_age
        self.secure = secure

    @property
    def name(self) -> str:
        return SECURE_COOKIE_NAME if self.secure else COOKIE_NAME

    @property
    def xsrf_name(self) -> str:
        return SECURE_XSRF_COOKIE_NAME if self.secure else XSRF_COOKIE_NAME

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
        # Path=/ and no domain: both required by the __Host- prefix.
        return {"httponly": True, "samesite": "Lax", "secure": self.secure, "max_age": self.max_age, "path": "/"}

    def xsrf_attributes(self) -> XsrfCookieAttributes:
        """The XSRF cookie's: like the session's, minus the lifetime Tornado manages."""
        return {"httponly": True, "samesite": "Lax", "secure": self.secure, "path": "/"}
