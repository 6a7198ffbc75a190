"""Faults against a real deployment (supervisord group, nginx, Redis, FerretDB): nothing lost.

Each scenario runs clients that behave like the browser (reconnect with
backoff, resume with ``since``, re-send unacked messages with their original
``client_id``) while one kind of fault is injected, then checks that every
client holds exactly its room's stored sequence, in order, without
duplicates, and that every acked message is stored.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.async_api import Browser as Chromium

from devtools.soak import Deployment, run_soak
from devtools.webclient import WebClient
from tests.support.pages import register, say
from tests.support.soak import assert_nothing_lost


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def http_status(url: str, cookie: str = "") -> int:
    """The status of a GET, redirects not followed (callable from a thread)."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_killing_a_process_while_clients_send_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    pids = {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports}
    report = await run_soak(
        deployment.url,
        clients=6,
        rooms=2,
        seconds=12,
        rate=3,
        faults=("kill",),
        fault_every=4,
        inject=deployment.inject,
    )
    assert_nothing_lost(report)
    assert report.faults and sum(c.reconnects for c in report.clients) > 0
    deployment.cluster.wait_healthy()
    assert {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports} != pids  # restarted


async def test_restarting_redis_mid_stream_loses_nothing(deployment: Deployment) -> None:
    report = await run_soak(
        deployment.url,
        clients=6,
        rooms=2,
        seconds=12,
        rate=3,
        faults=("redis",),
        fault_every=4,
        inject=deployment.inject,
    )
    assert_nothing_lost(report)
    assert "redis" in report.faults


async def test_while_the_database_is_down_sends_get_unavailable_pages_503_and_service_resumes(
    deployment: Deployment,
) -> None:
    pids = {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports}
    seen_during_outage: dict[str, int] = {}
    reader = WebClient(deployment.url)
    await reader.register()
    cookie = reader.cookie_header()

    def outage(fault: str) -> None:
        with deployment.database.outage():
            time.sleep(2.5)  # long enough for sends to fail, not only to wait
            seen_during_outage["page"] = http_status(f"{deployment.url}/rooms", cookie)
            seen_during_outage["readyz"] = max(
                http_status(f"http://127.0.0.1:{port}/readyz") for port in deployment.cluster.ports
            )
            seen_during_outage["healthz"] = max(
                http_status(f"http://127.0.0.1:{port}/healthz") for port in deployment.cluster.ports
            )

    report = await run_soak(
        deployment.url, clients=4, rooms=1, seconds=10, rate=4, faults=("db",), fault_every=3, inject=outage
    )
    assert_nothing_lost(report)
    assert sum(c.errors.get("unavailable", 0) for c in report.clients) > 0  # told, not left hanging
    assert seen_during_outage["page"] == 503  # the friendly page, not a 500 or a sign-in redirect
    assert seen_during_outage["readyz"] == 503 and seen_during_outage["healthz"] == 200
    assert {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports} == pids  # stayed up
    assert http_status(f"{deployment.url}/readyz") == 200  # and recovered by itself


async def test_a_rolling_restart_under_steady_traffic_loses_nothing(deployment: Deployment) -> None:
    pids = {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports}
    report = await run_soak(
        deployment.url,
        clients=6,
        rooms=2,
        seconds=12,
        rate=3,
        faults=("restart",),
        fault_every=5,
        inject=deployment.inject,
    )
    assert_nothing_lost(report)
    assert "restart" in report.faults
    new_pids = {port: deployment.cluster.process_pid(port) for port in deployment.cluster.ports}
    assert all(new_pids[port] != pids[port] for port in pids)  # every process was replaced


async def test_a_short_soak_with_every_fault_reports_zero_lost_duplicated_or_reordered(
    deployment: Deployment,
) -> None:
    report = await run_soak(
        deployment.url,
        clients=8,
        rooms=3,
        # Long enough for three kinds of fault whatever order they come in: a
        # restart of both processes alone takes about 7 s.
        seconds=float(os.environ.get("CHAT_SOAK_SECONDS", 30)),
        rate=2,
        faults=("kill", "redis", "db", "restart"),
        fault_every=3,
        inject=deployment.inject,
    )
    assert_nothing_lost(report)
    assert len(set(report.faults)) >= 3  # most kinds, whatever order they came in


async def test_the_browser_shows_reconnecting_keeps_unsent_messages_pending_and_sends_them_once(
    deployment: Deployment,
    chromium: Chromium,
    artifacts_dir: Path,
) -> None:
    context = await chromium.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await register(page, deployment.url, "browser_" + os.urandom(3).hex())
    await page.fill("input[name=name]", "reconnect room " + os.urandom(2).hex())
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_selector("#connection-state.state-connected")
    await say(page, "before the outage")
    await page.wait_for_selector("li.message:not(.pending) >> text=before the outage")

    await asyncio.to_thread(deployment.cluster.supervisorctl, "stop", "chat:*")
    try:
        await page.wait_for_selector("#room[data-state=reconnecting], #room[data-state=offline]", timeout=15000)
        await say(page, "typed while offline")
        await page.wait_for_selector("li.message.pending >> text=typed while offline")
        await page.screenshot(path=str(artifacts_dir / "offline.png"), full_page=True)
    finally:
        await asyncio.to_thread(deployment.cluster.supervisorctl, "start", "chat:*")

    await page.wait_for_selector("#connection-state.state-connected", timeout=30000)
    await page.wait_for_selector("li.message:not(.pending) >> text=typed while offline", timeout=15000)
    assert await page.locator("li.message >> text=typed while offline").count() == 1
    assert await page.locator("li.message.pending").count() == 0
    seqs = [int(s) for s in await page.locator("li.message").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 2
    await page.screenshot(path=str(artifacts_dir / "reconnected.png"), full_page=True)
    assert errors == []
