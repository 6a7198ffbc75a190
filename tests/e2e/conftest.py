"""Browser fixtures: Playwright driving Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.support.services import PROJECT_ROOT, find_binary

ARTIFACTS = Path(os.environ.get("CHAT_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))

# Chromium as root in a sandbox-less container, with nothing that phones home:
# this machine's network is closed and background fetches only add noise.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    executable = find_binary("chromium", "CHAT_CHROMIUM_BIN", [Path("/usr/bin/chromium")],
                             "install Debian's browser with `apt-get install chromium`")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
