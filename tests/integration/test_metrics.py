"""``GET /metrics``: a real server counts what it does, for its own machines only."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Browser, handshake_status, raw_request
from tests.support.server import ChildServerFactory, Server
from tests.support.waiting import eventually

PUBLIC = "127.0.0.2"  # any address but the one trusted machine
TRUSTED_ONLY = {"CHAT_TRUSTED_PROXIES": "127.0.0.1/32"}


async def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's metrics, by (name, sorted labels)."""
    head = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close"
    status, headers, body = await raw_request(server.base_url, head)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_a_server_counts_sockets_messages_latency_refusals_and_storage(
    child_server_factory: ChildServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    # A child process: what /metrics counts is the whole process's.
    server = child_server_factory(CHAT_LIMIT_SENDS="3 per minute")
    alice = open_browser(server.base_url)
    await alice.register()
    room_id = await alice.create_room()
    sock = await alice.socket(room_id)
    await sock.join()
    for n in range(3):
        await sock.acked(await sock.send_message(f"counted {n}"))
    await sock.send_message("one too many")
    while (frame := await sock.recv())["type"] != "error":
        pass  # the room's copies of the three messages
    assert frame["code"] == "rate_limited"
    assert await handshake_status(open_browser(server.base_url), room_id) == 401

    async def counted() -> bool:
        return (await scrape(server)).get(("chat_messages_delivered_total", ()), 0) >= 3

    await eventually(counted, 5, "the deliveries counted")
    samples = await scrape(server)
    assert samples[("chat_messages_stored_total", ())] == 3
    assert samples[("chat_send_to_ack_seconds_count", ())] == 3
    assert samples[("chat_send_to_delivery_seconds_count", ())] == 3
    assert samples[("chat_handshakes_refused_total", (("status", "401"),))] == 1
    assert samples[("chat_limit_refusals_total", (("kind", "send"),))] == 1
    assert samples[("chat_sockets_open", (("kind", "room"),))] == 1
    assert samples[("chat_rooms_with_local_listeners", ())] == 1
    assert samples[("chat_storage_seconds_count", (("operation", "messages.add_many"),))] >= 1
    assert samples.get(("chat_storage_errors_total", (("operation", "messages.add_many"),)), 0) == 0

    sock.close()
    await eventually(lambda: _open_sockets(server), 5, "the closed socket no longer counted")


async def _open_sockets(server: Server) -> bool:
    return (await scrape(server))[("chat_sockets_open", (("kind", "room"),))] == 0


async def test_metrics_are_not_shown_to_the_public(child_server_factory: ChildServerFactory) -> None:
    server = child_server_factory(**TRUSTED_ONLY)
    head = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close"
    status, _, body = await raw_request(server.base_url, head, source=PUBLIC)
    assert status == 404 and b"chat_" not in body
