"""Error pages come from templates, never tracebacks: an in-process app on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.httpserver

from chat.app import make_app
from chat.bootstrap import build_services
from chat.config import Settings
from chat.errors import Unavailable
from chat.web.base import BaseHandler
from tests.support.client import Browser
from tests.support.server import TEST_SECRET
from tests.support.services import free_port


class CrashHandler(BaseHandler):
    def get(self) -> None:
        raise RuntimeError("secret internals: password=hunter2")


class OutageHandler(BaseHandler):
    def get(self) -> None:
        raise Unavailable("database host db-7 refused the connection")


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    settings = Settings(
        cookie_secrets=(TEST_SECRET,), database_url=f"sqlite:///{tmp_path}/chat.sqlite3", bcrypt_rounds=4
    )
    services = build_services(settings)
    await services.start()
    app = make_app(settings, services)
    app.add_handlers(r".*$", [(r"/crash", CrashHandler), (r"/outage", OutageHandler)])
    port = free_port()
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    yield f"http://127.0.0.1:{port}"
    server.stop()
    await services.close()


async def test_an_unexpected_exception_renders_the_500_page_without_internals(base_url: str) -> None:
    response = await Browser(base_url).get("/crash")
    body = response.body.decode()
    assert response.code == 500
    assert "Something went wrong" in body and "<html" in body
    assert "hunter2" not in body and "Traceback" not in body and "RuntimeError" not in body


async def test_an_unreachable_backend_renders_the_503_page_with_retry_after(base_url: str) -> None:
    response = await Browser(base_url).get("/outage")
    body = response.body.decode()
    assert response.code == 503 and response.headers["Retry-After"] == "5"
    assert "cannot reach its database" in body and "db-7" not in body
