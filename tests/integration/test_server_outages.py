"""A database outage: clear errors, nothing acked that was not stored, recovery by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.client import Browser
from tests.support.server import ServerFactory
from tests.support.services import FerretDB, ferretdb_binary
from tests.support.waiting import eventually

# A bound, not a pause: the server notices the database is back on its next
# attempt, but each failed one can take serverSelectionTimeoutMS.
RECOVERY_TIMEOUT = 60.0


async def test_while_the_database_is_down_sends_get_unavailable_pages_get_503_and_service_resumes(
    server_factory: ServerFactory,
    open_browser: Callable[[str], Browser],
    tmp_path: Path,
) -> None:
    with FerretDB(ferretdb_binary(), tmp_path / "ferretdb") as database:
        server = server_factory("mongodb", database_url=database.url("chat") + "?serverSelectionTimeoutMS=1000")
        browser = open_browser(server.base_url)
        await browser.register()
        room_id = await browser.create_room()
        sock = await browser.socket(room_id)
        await sock.join()

        with database.outage():  # back on the same port, with the same files, afterwards
            client_id = await sock.send_message("sent during the outage")
            error = await sock.recv_type("error", timeout=15)
            assert (error["code"], error["client_id"]) == ("unavailable", client_id)

            page = await browser.get("/rooms")
            assert page.code == 503
            assert b"cannot reach its database" in page.body and b"Traceback" not in page.body
            assert (await browser.get("/readyz")).code == 503
            assert (await browser.get("/healthz")).code == 200  # the process itself is fine

        # The client retries with the same client_id until the server is back.
        answers: list[dict[str, Any]] = []

        async def resent_and_acked() -> bool:
            await sock.send_message("sent during the outage", client_id=client_id)
            answers.append(frame := await sock.recv(timeout=15))
            if frame["type"] == "ack":
                return True
            assert frame["code"] == "unavailable"
            return False

        await eventually(resent_and_acked, RECOVERY_TIMEOUT, "service resuming", interval=0.25)
        frame = answers[-1]
        assert frame["message"]["client_id"] == client_id
        assert (await sock.recv_type("message"))["message"]["client_id"] == client_id
        assert (await browser.get("/rooms")).code == 200
        assert (await browser.get("/readyz")).code == 200
        sock.close()

        fresh = await browser.socket(room_id, since=0)
        _, history = await fresh.join()
        assert [m["client_id"] for m in history["messages"]] == [client_id]


async def test_a_server_started_while_the_database_is_down_serves_503s_then_recovers_by_itself(
    server_factory: ServerFactory,
    tmp_path: Path,
) -> None:
    database = FerretDB(ferretdb_binary(), tmp_path / "ferretdb")  # not started yet
    try:
        server = server_factory("mongodb", database_url=database.url("chat") + "?serverSelectionTimeoutMS=500")
        browser = Browser(server.base_url)
        assert (await browser.get("/healthz")).code == 200
        assert (await browser.get("/readyz")).code == 503
        response = await browser.post(
            "/register", {"username": "early_bird", "password": "p" * 10, "confirm": "p" * 10}
        )
        assert response.code == 503 and b"cannot reach its database" in response.body

        database.start()

        async def ready() -> bool:
            return (await browser.get("/readyz")).code == 200

        await eventually(ready, RECOVERY_TIMEOUT, "/readyz answering 200", interval=0.1)
        await browser.register()  # works once the database is there
        assert (await browser.get("/rooms")).code == 200
        assert server.running  # never crashed
    finally:
        database.stop()
