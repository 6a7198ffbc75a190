"""Driving the site's pages in a real browser (Playwright), as a person would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .client import PASSWORD

if TYPE_CHECKING:
    # Only the e2e tier has a browser; importing this module must not need Playwright.
    from playwright.async_api import Browser as Chromium
    from playwright.async_api import BrowserContext, Page


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
    await page.click("form.create-room button[type=submit]")
    await page.wait_for_url(f"{base_url}/rooms/*")
    return page.url.rsplit("/", 1)[1]


@dataclass
class Reader:
    """One person, registered, on a room of their own that is connected; ``errors`` collects page errors."""

    context: BrowserContext
    page: Page
    name: str
    room_id: str
    errors: list[str] = field(default_factory=list)


async def alone_in_a_room(chromium: Chromium, base_url: str, first_name: str, **context_options: Any) -> Reader:
    """Register ``first_name`` (made unique) in a new browser context, create a room and wait until it is live."""
    context = await chromium.new_context(**context_options)
    page = await context.new_page()
    reader = Reader(context, page, f"{first_name}_{uuid.uuid4().hex[:6]}", "")
    page.on("pageerror", lambda exc: reader.errors.append(str(exc)))
    await register(page, base_url, reader.name)
    reader.room_id = await create_room(page, base_url, f"{first_name}'s room {uuid.uuid4().hex[:4]}")
    await connected(page)
    return reader


async def connected(*pages: Page) -> None:
    """Wait until each room page's socket is up."""
    for page in pages:
        await page.wait_for_selector("#connection-state.state-connected")


@dataclass
class Person:
    context: BrowserContext
    page: Page
    name: str


@dataclass
class TwoPeople:
    """Alice and Bob, registered, each in a browser context of their own, and the page errors of both."""

    alice: Person
    bob: Person
    errors: list[str] = field(default_factory=list)

    async def close(self) -> None:
        for person in (self.alice, self.bob):
            await person.context.close()


async def two_people(chromium: Chromium, base_url: str, init_script: str | None = None) -> TwoPeople:
    """Register Alice and Bob (random names) in two browser contexts; ``init_script`` runs before any page script."""
    people = []
    errors: list[str] = []
    for first in ("alice", "bob"):
        context = await chromium.new_context()
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        name = f"{first}_{uuid.uuid4().hex[:6]}"
        await register(page, base_url, name)
        people.append(Person(context, page, name))
    return TwoPeople(people[0], people[1], errors)


async def record_notices(page: Page) -> None:
    """From now on, ``window.noticesShown`` lists every notice the page shows, however briefly."""
    await page.evaluate(
        """() => {
            const notice = document.getElementById("notice");
            window.noticesShown = [];
            new MutationObserver(() => {
                if (!notice.hidden && notice.textContent) window.noticesShown.push(notice.textContent);
            }).observe(notice, { attributes: true, childList: true, characterData: true, subtree: true });
        }"""
    )
