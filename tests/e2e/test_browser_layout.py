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


async def test_a_refused_form_keeps_the_sidebar(server_factory: ServerFactory, chromium: Chromium) -> None:
    # Inviting someone who does not exist answers with the room again and
    # the error under the field: the reader's rooms must not vanish with it.
    server = server_factory()
    context = await chromium.new_context(viewport=SIZES[0])
    page = await context.new_page()
    await register(page, server.base_url, f"uma_{uuid.uuid4().hex[:6]}")
    await page.fill("input[name=name]", f"secret {uuid.uuid4().hex[:4]}")
    await page.check("input[name=private]")
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_url(f"{server.base_url}/rooms/*")
    assert await page.is_visible("#sidebar")

    await page.fill("form.invite input[name=username]", f"nobody_{uuid.uuid4().hex[:6]}")
    await page.click("form.invite button[type=submit]")
    await page.wait_for_selector("form.invite [aria-invalid=true], .field-error")

    assert await page.is_visible("#sidebar")
    await context.close()
