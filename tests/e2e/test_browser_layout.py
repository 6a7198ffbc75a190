"""How pages lay out at desktop and phone size, in a real browser: what new users tripped over."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import ViewportSize

from tests.support.pages import register
from tests.support.server import ServerFactory

SIZES = [ViewportSize(width=1366, height=768), ViewportSize(width=390, height=844), ViewportSize(width=320, height=640)]


@pytest.mark.parametrize("viewport", SIZES, ids=["desktop", "phone", "narrow"])
async def test_the_rooms_search_button_keeps_its_word_on_one_line(
    server_factory: ServerFactory, chromium: Chromium, viewport: ViewportSize
) -> None:
    server = server_factory()
    context = await chromium.new_context(viewport=viewport)
    page = await context.new_page()
    await register(page, server.base_url, f"tess_{uuid.uuid4().hex[:6]}")

    # The lines the button's text takes ("Searc" / "h" was two).
    lines = await page.evaluate(
        """() => {
            const range = document.createRange();
            range.selectNodeContents(document.querySelector("form.search button"));
            return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
        }"""
    )
    assert lines == 1
    await context.close()
