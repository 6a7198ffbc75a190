"""Driving the site's pages in a real browser (Playwright), as a person would."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .client import PASSWORD

if TYPE_CHECKING:
    # Only the e2e tier has a browser; importing this module must not need Playwright.
    from playwright.async_api import Page


async def register(page: Page, base_url: str, username: str) -> None:
    await page.goto(f"{base_url}/register")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.fill("input[name=confirm]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/rooms")


async def say(page: Page, text: str) -> None:
    """Type ``text`` into the room's message box and send it with Enter."""
    await page.fill("#body", text)
    await page.keyboard.press("Enter")


async def create_room(page: Page, base_url: str, name: str) -> str:
    """Create a room from the rooms page and land on it; returns its id."""
    await page.fill("input[name=name]", name)
    await page.click("form.row button[type=submit]")
    await page.wait_for_url(f"{base_url}/rooms/*")
    return page.url.rsplit("/", 1)[1]


async def connected(*pages: Page) -> None:
    """Wait until each room page's socket is up."""
    for page in pages:
        await page.wait_for_selector("#connection-state.state-connected")
