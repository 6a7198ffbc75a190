"""Markdown, links and mentions in a real browser: the same markup live and server-rendered, and no XSS."""

from __future__ import annotations

from playwright.async_api import Browser as Chromium
from playwright.async_api import Page

from tests.support.pages import connected, create_room, two_people
from tests.support.server import ServerFactory
from tests.support.waiting import eventually
from tests.support.xss import XSS_CORPUS

# Anything that runs counts itself here instead of opening a dialog.
XSS_TRAP = """
window.__ran = 0;
window.alert = window.confirm = window.prompt = () => { window.__ran += 1; };
"""


async def bodies(page: Page) -> dict[str, str]:
    """Each stored message's rendered body (innerHTML), by seq."""
    pairs = await page.locator("#messages li.message[data-seq]").evaluate_all(
        "els => els.map(e => [e.dataset.seq, e.querySelector('.body').innerHTML])"
    )
    return dict(pairs)


async def test_formatting_is_the_same_live_and_on_the_page_and_hostile_input_stays_text(
    server_factory: ServerFactory, chromium: Chromium
) -> None:
    server = server_factory(CHAT_LIMIT_SENDS="500 per minute")
    base = server.base_url
    people = await two_people(chromium, base, init_script=XSS_TRAP)
    alice, bob, bob_name = people.alice.page, people.bob.page, people.bob.name
    await create_room(alice, base, "<img src=x onerror=alert(1)> room")
    await bob.goto(alice.url)
    await connected(alice, bob)

    friendly = [
        "**bold**, _emphasis_ and `code`",
        "see https://example.com/docs?a=1&b=2",
        f"thanks @{bob_name}!",
        "> a quote\n\n- one\n- two",
        "```\nprint('<b>')\n```",
    ]
    sent = friendly + XSS_CORPUS
    await alice.evaluate(
        """(bodies) => {
            const input = document.getElementById("body");
            const form = document.getElementById("composer");
            for (const body of bodies) { input.value = body; form.requestSubmit(); }
        }""",
        sent,
    )

    async def all_arrived() -> bool:
        return len(await bodies(bob)) == len(sent)

    await eventually(all_arrived, 30, "every message on bob's page", interval=0.2)
    live = await bodies(bob)

    # Markdown, links and mentions as rendered by the server when stored.
    assert "<strong>bold</strong>" in live["1"] and "<code>code</code>" in live["1"]
    link = bob.locator("li.message[data-seq='2'] .body a")
    assert await link.get_attribute("href") == "https://example.com/docs?a=1&b=2"
    assert await link.get_attribute("target") == "_blank"
    assert await link.get_attribute("rel") == "noopener noreferrer nofollow"
    assert await bob.locator("li.message[data-seq='3'] .mention.mention-me").text_content() == f"@{bob_name}"
    assert await alice.locator("li.message[data-seq='3'] .mention:not(.mention-me)").count() == 1
    assert "<blockquote>" in live["4"] and "<li>two</li>" in live["4"]

    # The same markup after a reload, rendered by the server into the page.
    await bob.reload()
    await connected(bob)
    reloaded = await bodies(bob)
    shown = {seq: html for seq, html in live.items() if seq in reloaded}
    assert shown and all(reloaded[seq] == html for seq, html in shown.items()), [
        (seq, html, reloaded[seq]) for seq, html in shown.items() if reloaded[seq] != html
    ]

    # Nothing ran, and no link goes anywhere but the web.
    for page in (alice, bob):
        assert await page.evaluate("window.__ran") == 0
        hrefs = await page.locator("#messages a[href]").evaluate_all("els => els.map(e => e.href)")
        assert all(href.startswith(("http://", "https://")) for href in hrefs), hrefs
        assert await page.locator("#messages script, #messages img, #messages iframe, #messages svg").count() == 0
    assert "<img src=x onerror=alert(1)> room" in await bob.title()  # the room's name, as text
    assert people.errors == []
    await people.close()
