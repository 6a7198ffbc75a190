"""The distributed configuration's edge: nginx in front, supervisord behind, as a stranger sees it.

nginx listens on 127.0.0.1 only; a client connecting from 127.0.0.2 is not
loopback-1 to nginx, so it stands in for the public (health probes) and for
a client forging forwarding headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser as Chromium

from chat.tools.cluster import Cluster
from tests.support.client import Browser, raw_request
from tests.support.pages import register, say
from tests.support.waiting import eventually

PUBLIC = "127.0.0.2"


def host(cluster: Cluster) -> str:
    return urlsplit(cluster.url).netloc


async def test_nginx_and_the_app_name_no_versions(cluster: Cluster, open_browser: Callable[[str], Browser]) -> None:
    browser = open_browser(cluster.url)
    await browser.register()
    for path in ("/login", "/rooms", "/static/chat.js", "/no/such/page"):
        response = await browser.get(path)
        assert response.headers.get("Server") == "nginx", (path, response.headers.get("Server"))
        assert "X-Powered-By" not in response.headers, path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path


async def test_the_group_sets_host_prefixed_secure_cookies_and_hsts(
    cluster: Cluster, open_browser: Callable[[str], Browser]
) -> None:
    # Finding 6: the distributed configuration had no Secure cookies.
    browser = open_browser(cluster.url)
    page = await browser.get("/login")
    assert page.headers.get("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    response = await browser.post(
        "/register", {"username": f"u_{uuid.uuid4().hex[:8]}", "password": "p" * 12, "confirm": "p" * 12}
    )
    session = [h for h in response.headers.get_list("Set-Cookie") if h.startswith("__Host-chat_session=")]
    assert len(session) == 1 and "; Secure" in session[0] and "; Path=/" in session[0]
    assert (await browser.get("/rooms")).code == 200


async def test_health_probes_are_not_public_through_nginx(cluster: Cluster) -> None:
    for path in ("/healthz", "/readyz"):
        head = f"GET {path} HTTP/1.1\r\nHost: {host(cluster)}\r\nConnection: close"
        status, _, body = await raw_request(cluster.url, head, source=PUBLIC)
        assert status == 404 and b"instance" not in body, path
        status, _, body = await raw_request(cluster.url, head)  # from the machine itself
        assert status == 200 and b"instance" in body, path


async def test_metrics_are_never_served_through_nginx(cluster: Cluster) -> None:
    head = f"GET /metrics HTTP/1.1\r\nHost: {host(cluster)}\r\nConnection: close"
    for source in (PUBLIC, None):  # not even to the machine itself: Prometheus scrapes each process
        status, _, body = await raw_request(cluster.url, head, source=source)
        assert status == 404 and b"chat_" not in body


async def test_a_client_cannot_choose_the_address_the_app_sees(cluster: Cluster) -> None:
    # Checklist 23: nginx overwrites X-Real-IP and X-Forwarded-For with the
    # address it saw; the processes believe nginx (loopback) only.
    probe = uuid.uuid4().hex
    head = (
        f"GET /login?probe={probe} HTTP/1.1\r\nHost: {host(cluster)}\r\n"
        "X-Real-IP: 203.0.113.9\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.1\r\nConnection: close"
    )
    assert (await raw_request(cluster.url, head, source=PUBLIC))[0] == 200

    def logged_ip() -> str | None:
        for path in (cluster.run_dir / "log").glob("chat-*.log"):
            match = re.search(rf"GET /login\?probe={probe} \(([^)]+)\)", path.read_text(errors="replace"))
            if match:
                return match.group(1)
        return None

    await eventually(lambda: logged_ip() is not None, 5, "the probe in a process's access log")
    assert logged_ip() == PUBLIC


def listening_addresses(port: int) -> set[str]:
    """The local addresses of sockets listening on ``port`` (Linux /proc/net, IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_processes_listen_on_loopback_only(cluster: Cluster) -> None:
    # Finding 8: a process port open to the network would skip nginx.
    for port in cluster.ports:
        assert listening_addresses(port) == {"0100007F"}, port  # 127.0.0.1, little-endian hex


async def test_back_after_signing_out_does_not_show_the_room(
    cluster: Cluster, chromium: Chromium, artifacts_dir: Path
) -> None:
    # Finding 6: without Cache-Control: no-store, Back showed the room and its messages.
    context = await chromium.new_context()
    page = await context.new_page()
    await register(page, cluster.url, f"back_{uuid.uuid4().hex[:6]}")
    await page.fill("input[name=name]", f"Private {uuid.uuid4().hex[:4]}")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_url(f"{cluster.url}/rooms/*")
    await page.wait_for_selector("#connection-state.state-connected")
    secret = f"secret {uuid.uuid4().hex[:8]}"
    await say(page, secret)
    await page.wait_for_selector(f"li.message:not(.pending) >> text={secret}")

    await page.click("button:has-text('Sign out')")
    await page.wait_for_url(f"{cluster.url}/login")
    await page.go_back()
    await page.wait_for_load_state()
    await page.screenshot(path=str(artifacts_dir / "after-back.png"), full_page=True)
    assert "/login" in page.url
    assert await page.locator(f"text={secret}").count() == 0
    await context.close()
