"""Accessibility in a real browser: axe-core's WCAG 2.2 AA rules on every kind of page, in light and dark,
on a desktop and a phone; and no sideways scrolling with the longest names and words the site accepts."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import ConsoleMessage, Page, ViewportSize

from tests.support.axe import axe_violations, describe
from tests.support.client import PASSWORD
from tests.support.pages import connected, create_room, register, say
from tests.support.server import ServerFactory
from tests.support.services import PROJECT_ROOT

DESKTOP = ViewportSize(width=1366, height=768)
PHONE = ViewportSize(width=390, height=844)
MATRIX = [
    pytest.param(viewport, scheme, id=f"{name}-{scheme}")
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE))
    for scheme in ("light", "dark")
]

# The longest names the site accepts (chat.services.identity.accounts and chat.services.rooms.catalog).
USERNAME_MAX = 32
ROOM_NAME_MAX = 64
LONG_WORD = "unbreakable" * 27 + "end"  # 300 characters, no place to wrap

Scheme = Literal["light", "dark"]

# The README's screenshots come from this test: CHAT_UPDATE_SCREENSHOTS=1 writes them here.
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"


async def readme_screenshot(page: Page, name: str) -> None:
    if os.environ.get("CHAT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


class Audit:
    """Runs axe on page after page and keeps what each one got wrong, to assert on all of them at the end."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.failures: list[str] = []
        self.errors: list[str] = []
        # Set once the test takes the server away: failed connections are then what it asked for.
        self.outage = False
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # CSP refusals show only on the console; they would mean the injection (or the page) broke the policy.
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # The status of the document itself (the 404 page, a refused form's 400) is what the test asked for.
        if message.type != "error" or message.location.get("url") == self.page.url or self.outage:
            return
        self.errors.append(f"{self.page.url}: console error: {message.text}")

    async def check(self, label: str) -> None:
        violations = await axe_violations(self.page)
        if violations:
            self.failures.append(f"== {label} ({self.page.url})\n{describe(violations)}")

    def report(self) -> str:
        sections = self.failures + ([f"== page errors\n{chr(10).join(self.errors)}"] if self.errors else [])
        return "\n\n".join(sections)


@pytest.mark.parametrize(("viewport", "scheme"), MATRIX)
async def test_pages_meet_wcag_aa(
    server_factory: ServerFactory, chromium: Chromium, viewport: ViewportSize, scheme: Scheme, artifacts_dir: Path
) -> None:
    server = server_factory()
    base = server.base_url
    suffix = uuid.uuid4().hex[:6]
    me, other = f"reader_{suffix}", f"writer_{suffix}"
    context = await chromium.new_context(viewport=viewport, color_scheme=scheme)
    other_context = await chromium.new_context()
    try:
        page = await context.new_page()
        audit = Audit(page)

        # Signed out: the two forms, and the register form answering with an error.
        await page.goto(f"{base}/login")
        await audit.check("sign-in page")
        await page.goto(f"{base}/register")
        await audit.check("register page")
        await page.fill("input[name=username]", me)
        await page.fill("input[name=password]", PASSWORD)
        await page.fill("input[name=confirm]", PASSWORD + "-not-the-same")
        await page.click("button[type=submit]")
        # The refusal is a message above the form (role=alert) or under the field it is about (aria-invalid).
        await page.wait_for_selector("[role=alert], [aria-invalid=true]")
        await audit.check("register page with an error")
        await page.screenshot(path=str(artifacts_dir / "register-error.png"), full_page=True)

        # Signed in: the rooms, a live room with a conversation (a mention each way), the account page, a 404.
        await register(page, base, me)
        other_page = await other_context.new_page()
        await register(other_page, base, other)
        room = await create_room(page, base, f"Accessible room {suffix}")
        await other_page.goto(f"{base}/rooms/{room}")
        await other_page.click("text=Join room")
        await connected(page, other_page)
        await say(page, f"Hello @{other}, welcome to the room")
        await page.wait_for_selector("text=welcome to the room")
        await say(other_page, f"Thanks @{me}, glad to be here")
        await page.wait_for_selector("text=glad to be here")
        await say(page, "A plain message with a link: https://example.com/docs and **bold** text")
        await page.wait_for_selector("text=A plain message")
        await say(other_page, "And a second line\nbelow the first")
        await page.wait_for_selector("text=below the first")
        await audit.check("room page, connected, with messages")
        await page.screenshot(path=str(artifacts_dir / "room.png"), full_page=True)
        label = f"{'desktop' if viewport == DESKTOP else 'phone'}-{scheme}"
        await readme_screenshot(page, f"room-{label}")

        await page.goto(f"{base}/rooms")
        await audit.check("rooms page")
        await page.screenshot(path=str(artifacts_dir / "rooms.png"), full_page=True)
        await page.goto(f"{base}/account")
        await audit.check("account page")
        response = await page.goto(f"{base}/rooms/doesnotexist")
        assert response is not None and response.status == 404
        await audit.check("404 page")
        # The question before removing someone (the room's owner asks it of a member).
        await page.goto(f"{base}/rooms/{room}")
        await page.click("summary:has-text('Members')")
        await page.locator(f".members li:has-text('{other}') button:has-text('Remove')").click()
        await page.wait_for_selector(f"h1:has-text('Remove {other}')")
        await audit.check("confirm removing a member")

        # The room again, in each state it can be in.
        await page.goto(f"{base}/rooms/{room}")
        await connected(page)
        if viewport == PHONE:
            await page.click("#sidebar-toggle")
            await page.wait_for_selector("#sidebar:visible")
            await audit.check("room page, phone, the rooms panel open")
            await page.keyboard.press("Escape")
            await page.wait_for_selector("#sidebar", state="hidden")
        audit.outage = True
        await asyncio.to_thread(server.stop)
        await page.wait_for_selector("#room[data-state=reconnecting]")
        await say(page, "waiting for the server")
        await page.wait_for_selector("li.message.pending >> text=waiting for the server")
        await audit.check("room page, reconnecting, a message waiting")
        await page.screenshot(path=str(artifacts_dir / "room-reconnecting.png"))
        await readme_screenshot(page, f"reconnecting-{label}")
        await asyncio.to_thread(server.start)
        # Its handler, not a pointer click: the page's own next try may get there first.
        await page.evaluate("document.getElementById('reconnect-now').click()")
        await page.wait_for_selector("#room[data-state=connected]")
        await page.wait_for_selector("li.message:not(.pending) >> text=waiting for the server")

        signing_out = await context.new_page()
        await signing_out.goto(f"{base}/account")
        await signing_out.click("text=Sign out")
        await page.wait_for_selector("#room[data-state=session-ended]")
        await say(page, "kept for later")
        await page.wait_for_selector("li.message.failed >> text=kept for later")
        await audit.check("room page, session ended, a message kept")
        await page.screenshot(path=str(artifacts_dir / "room-session-ended.png"))
    finally:
        await context.close()
        await other_context.close()

    assert not audit.failures and not audit.errors, audit.report()


OVERFLOW_REPORT = """() => {
    const width = window.innerWidth;
    const clips = (element) => !["visible", ""].includes(getComputedStyle(element).overflowX);
    const describe = (element) => {
        let name = element.tagName.toLowerCase();
        if (element.id) name += "#" + element.id;
        for (const cls of element.classList) name += "." + cls;
        return name;
    };
    const offenders = [];
    for (const element of document.body.querySelectorAll("*")) {
        const box = element.getBoundingClientRect();
        if (box.width === 0 || box.right <= width + 0.5) continue;
        // Inside a container that scrolls or clips sideways and itself fits: not the page's problem.
        let ancestor = element.parentElement, contained = false;
        for (; ancestor && ancestor !== document.body; ancestor = ancestor.parentElement) {
            if (clips(ancestor) && ancestor.getBoundingClientRect().right <= width + 0.5) { contained = true; break; }
        }
        if (contained) continue;
        const parent = element.parentElement;
        offenders.push({
            element: describe(element),
            right: Math.round(box.right),
            width: Math.round(box.width),
            // The first element of its branch to stick out: the one whose styles need fixing.
            starts_here: !parent || parent.getBoundingClientRect().right <= width + 0.5,
            text: (element.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 40),
        });
    }
    offenders.sort((a, b) => (b.starts_here - a.starts_here) || (b.right - a.right));
    return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, offenders: offenders.slice(0, 10)};
}"""


async def overflow(page: Page, label: str) -> str | None:
    """None if the page fits its viewport's width, else what sticks out, widest first."""
    report: dict[str, Any] = await page.evaluate(OVERFLOW_REPORT)
    if report["scrollWidth"] <= report["innerWidth"]:
        return None
    lines = [f"== {label} ({page.url}): scrollWidth {report['scrollWidth']} > innerWidth {report['innerWidth']}"]
    for offender in report["offenders"]:
        start = " (starts here)" if offender["starts_here"] else ""
        lines.append(
            f"    {offender['element']}{start}: right edge {offender['right']}px, width {offender['width']}px,"
            f" text {offender['text']!r}"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("width", [320, 390])
async def test_no_horizontal_overflow_with_longest_names(
    server_factory: ServerFactory, chromium: Chromium, width: int, artifacts_dir: Path
) -> None:
    server = server_factory()
    base = server.base_url
    unique = uuid.uuid4().hex
    username = f"longest.name-{unique}"[:USERNAME_MAX]
    room_name = f"Longest_room_name_without_spaces_{unique}"[:ROOM_NAME_MAX].ljust(ROOM_NAME_MAX, "W")
    assert len(username) == USERNAME_MAX and len(room_name) == ROOM_NAME_MAX and len(LONG_WORD) == 300
    context = await chromium.new_context(viewport=ViewportSize(width=width, height=844))
    findings: list[str] = []
    try:
        page = await context.new_page()
        await register(page, base, username)
        room = await create_room(page, base, room_name)
        await connected(page)
        await say(page, LONG_WORD)
        await page.wait_for_selector(f"text={LONG_WORD[:40]}")
        await say(page, f"@{username} {LONG_WORD}")
        await page.wait_for_selector(f"text=@{username}")

        for label, path in (("rooms page", "/rooms"), ("room page", f"/rooms/{room}"), ("account page", "/account")):
            await page.goto(f"{base}{path}")
            if path == f"/rooms/{room}":
                await connected(page)
            await page.screenshot(path=str(artifacts_dir / f"{label.replace(' ', '-')}.png"))
            finding = await overflow(page, label)
            if finding:
                findings.append(finding)
            if path == "/account":  # and the rooms panel the top bar opens
                await page.click("#sidebar-toggle")
                await page.wait_for_selector("#sidebar:visible")
                await page.screenshot(path=str(artifacts_dir / "rooms-panel.png"))
                finding = await overflow(page, "rooms panel")
                if finding:
                    findings.append(finding)
    finally:
        await context.close()

    assert not findings, "\n\n".join(findings)
