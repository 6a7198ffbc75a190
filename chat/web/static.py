"""``/static/``: Tornado's file handler, with our headers and a 404 for paths no file can have."""

from __future__ import annotations

from typing import cast

import tornado.web

from ..wire.text import has_control_characters
from .base import HSTS, ChatApplication


class StaticFiles(tornado.web.StaticFileHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "strict-origin-when-cross-origin")
        app = cast(ChatApplication, self.application)
        if app.services.settings.cookie_secure or self.request.protocol == "https":
            self.set_header("Strict-Transport-Security", HSTS)

    def parse_url_path(self, url_path: str) -> str:
        # A NUL made os.path.realpath raise (a 500 with a traceback); no file
        # of ours has a control character or a backslash in its name, and
        # there are no directories to list ("chat.js/" would find chat.js).
        if has_control_characters(url_path) or "\\" in url_path or url_path.endswith("/"):
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        try:
            return super().validate_absolute_path(root, absolute_path)
        except (ValueError, OSError):  # a name the file system cannot take (too long, ...)
            raise tornado.web.HTTPError(404) from None
