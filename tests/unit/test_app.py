"""The Tornado settings the edge relies on are set explicitly, never left to defaults."""

from __future__ import annotations

from unittest import mock

import pytest

from chat.app import make_app
from chat.config import Settings
from chat.web.static import StaticFiles

SECRET = "s" * 40


@pytest.mark.parametrize(("secure", "xsrf_name"), [(True, "__Host-_xsrf"), (False, "_xsrf")])
def test_the_xsrf_cookie_follows_the_session_cookie(secure: bool, xsrf_name: str) -> None:
    app = make_app(Settings(cookie_secrets=(SECRET,), cookie_secure=secure), mock.Mock())

    assert app.settings["xsrf_cookies"] is True
    assert app.settings["xsrf_cookie_name"] == xsrf_name
    assert app.settings["xsrf_cookie_kwargs"]["secure"] is secure


def test_frames_are_limited_to_64_kib_and_cross_site_posts_are_checked() -> None:
    app = make_app(Settings(cookie_secrets=(SECRET,)), mock.Mock())

    assert app.settings["websocket_max_message_size"] == 64 * 1024
    assert app.settings["cross_origin_protection"] is True
    assert app.settings["static_handler_class"] is StaticFiles
