"""Message bodies rendered to HTML: the Markdown subset, links, mentions, and XSS that stays text."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it.rules_inline import linkify as markdown_it_linkify

from chat.models import User
from chat.services.conversation import formatting
from chat.services.conversation.formatting import Renderer, for_reader, mentioned_names, render, render_plain
from chat.services.conversation.rendering_pool import RenderPool
from tests.support.xss import XSS_CORPUS

MOMENT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
BOB = User("b0b0b0b0b0b0b0b0b0b0b0b0", "Bob", b"", MOMENT)
MENTIONS = {"bob": BOB}

ALLOWED_TAGS = {"p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span"}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "target", "rel"},
    "ol": {"start"},
    "span": {"class", "data-user-id"},
}


class Inspector(HTMLParser):
    """Collects every tag and attribute of rendered HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_inert(html: str) -> None:
    """Only allowed tags and attributes; links http(s), new tab, no referrer; no script anywhere."""
    inspector = Inspector()
    inspector.feed(html)
    for tag, attrs in inspector.tags:
        assert tag in ALLOWED_TAGS, (tag, html)
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, set()), (tag, attrs, html)
        if tag == "a":
            assert re.match(r"https?://", attrs.get("href") or "", re.IGNORECASE), html
            assert attrs["target"] == "_blank" and attrs["rel"] == "noopener noreferrer nofollow"
        if tag == "span":
            assert attrs.get("class") == "mention", html
    assert "<script" not in html.lower()


# -- the Markdown subset -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "html"),
    [
        ("**bold** and _em_", "<p><strong>bold</strong> and <em>em</em></p>"),
        ("`x < y`", "<p><code>x &lt; y</code></p>"),
        ("```\nif a < b:\n    pass\n```", "<pre><code>if a &lt; b:\n    pass\n</code></pre>"),
        ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>"),
        ("- one\n- two", "<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
        ("3. three\n4. four", '<ol start="3">\n<li>three</li>\n<li>four</li>\n</ol>'),
        ("line one\nline two", "<p>line one<br>\nline two</p>"),
        # Typed as text in a chat: no headings, rules or images.
        ("# 1 fan", "<p># 1 fan</p>"),
        ("a\n---", "<p>a<br>\n---</p>"),
        ("<b>not html</b>", "<p>&lt;b&gt;not html&lt;/b&gt;</p>"),
    ],
)
def test_the_markdown_subset_renders_as_a_chat_expects(body: str, html: str) -> None:
    assert render(body) == html


@pytest.mark.parametrize(
    ("body", "href"),
    [
        ("see https://example.com/a?b=1&c=2 now", "https://example.com/a?b=1&amp;c=2"),
        ("www.example.org", "http://www.example.org"),
        ("[the docs](https://docs.example.com/x)", "https://docs.example.com/x"),
        ("<http://example.net>", "http://example.net"),
    ],
)
def test_web_links_open_in_a_new_tab_without_referrer(body: str, href: str) -> None:
    html = render(body)
    assert f'<a href="{href}" target="_blank" rel="noopener noreferrer nofollow">' in html
    assert_inert(html)


@pytest.mark.parametrize(
    "body",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](  javascript:alert(1))",
        "[x](java\tscript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](vbscript:msgbox(1))",
        "[x](file:///etc/passwd)",
        "[mail](mailto:a@example.com)",
        "<javascript:alert(1)>",
        "javascript:alert(1)",
        "ftp://example.com/file",
    ],
)
def test_links_are_http_or_https_only(body: str) -> None:
    html = render(body)
    assert "<a " not in html
    assert_inert(html)


# -- mentions --------------------------------------------------------------------------


def test_a_known_user_is_mentioned_by_name_outside_code_and_links() -> None:
    html = render("hi @bob, @BOB. @nobody a@bob.com `@bob` [@bob](https://e.com)", MENTIONS)
    mention = f'<span class="mention" data-user-id="{BOB.id}">@Bob</span>'
    assert html.count(mention) == 2
    assert "@nobody" in html and "a@bob.com" in html and "<code>@bob</code>" in html
    assert_inert(html)


def test_the_readers_own_mentions_are_marked_for_the_page() -> None:
    html = render("@bob look", MENTIONS)
    assert 'class="mention mention-me"' in for_reader(html, BOB.id)
    assert for_reader(html, "someone-else") == html


def test_names_to_look_up_are_few_and_lower_case() -> None:
    assert mentioned_names("@Bob. @alice_1 email@x.com") == {"bob.", "bob", "alice_1"}
    assert len(mentioned_names(" ".join(f"@user{i}" for i in range(100)))) <= 21


async def test_the_renderer_looks_each_name_up_once_a_minute() -> None:
    asked: list[str] = []

    async def find(name: str) -> User | None:
        asked.append(name)
        return BOB if name == "bob" else None

    renderer = Renderer(find)
    for _ in range(3):
        assert "mention" in await renderer.render("@bob and @ghost")
    assert sorted(asked) == ["bob", "ghost"]


# -- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize("body", XSS_CORPUS)
def test_every_payload_of_the_xss_corpus_stays_text(body: str) -> None:
    html = render(body, MENTIONS)
    assert_inert(html)
    inspector = Inspector()
    inspector.feed(html)
    assert not any(name.startswith("on") for _, attrs in inspector.tags for name in attrs)
    assert "<script" not in html.lower() and "<img" not in html.lower()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"<>\"'&=:/()[]!`*_#-@ \n", "script", "javascript", "onerror", "img", "bob", "https"]),
        max_size=40,
    ).map("".join)
)
def test_whatever_is_typed_renders_to_allowed_markup_only(body: str) -> None:
    assert_inert(render(body, MENTIONS))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "N", "Zs"], include_characters=",;'\"?_*"), max_size=60))
def test_plain_lines_take_a_shortcut_that_renders_what_markdown_would(body: str) -> None:
    body = body.strip()
    assert render(body) == str(formatting._SANITISER.clean(formatting._MARKDOWN.render(body, {"mentions": {}}))).strip()


# -- bounded work ----------------------------------------------------------------------


def test_text_full_of_bracketed_schemes_renders_in_time_linear_in_its_length() -> None:
    # 64 KiB of "[http://" took 10.8 s when linkify searched all the pending
    # text for each scheme (the square of the length); linear, it takes 0.4 s.
    body = "[http://" * 8192
    started = time.perf_counter()
    render(body)
    assert time.perf_counter() - started < 3.0


# markdown-it-py's own rule, as it was before ours replaced it.
_LIBRARY_LINKIFY = formatting._markdown()
_LIBRARY_LINKIFY.inline.ruler.at("linkify", markdown_it_linkify)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*"[]()*_`:/ \n@<>-.+1a", "://", "http", "HTTPS", "ftp", "mailto", "\u017f", "a" * 40, "x.co", "x.co/_a_"]
        ),
        max_size=40,
    ).map("".join)
)
# Where only the inline rule links the whole URL (the later pass would make emphasis of "_a_").
@example("see https://x.co/_a_ and *b*")
@example("a.b+c-d:http://x.co/_x_")
@example("*https://x.co/a*b*")
@example("x" * 27 + " http://y.co/_z_")
@example("x" * 40 + "http://y.co/_z_")
def test_bare_links_are_the_ones_markdown_it_finds(body: str) -> None:
    env = {"mentions": MENTIONS}
    assert formatting._MARKDOWN.render(body, dict(env)) == _LIBRARY_LINKIFY.render(body, dict(env))


# -- the plain-text fallback -----------------------------------------------------------


def test_plain_text_keeps_paragraphs_line_breaks_and_mentions_and_nothing_else() -> None:
    body = "**not bold** see http://example.com <b>x</b> & [y](https://e.com)\r\nhi @bob\n\n\n  second\tpara  "
    assert render_plain(body, MENTIONS) == (
        "<p>**not bold** see http://example.com &lt;b&gt;x&lt;/b&gt; &amp; [y](https://e.com)<br>\n"
        f'hi <span class="mention" data-user-id="{BOB.id}">@Bob</span></p>\n'
        "<p>second\tpara</p>"
    )


@pytest.mark.parametrize("body", XSS_CORPUS)
def test_every_payload_of_the_xss_corpus_stays_text_as_plain_text_too(body: str) -> None:
    html = render_plain(body, MENTIONS)
    assert_inert(html)
    assert "<a " not in html and "<script" not in html.lower()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(categories=["L", "N", "Zs"], include_characters=",;'\"?"), max_size=30),
        max_size=5,
    ),
    st.sampled_from(["\n", "\n\n"]),
)
def test_plain_lines_come_out_of_the_fallback_as_markdown_renders_them(lines: list[str], newline: str) -> None:
    body = newline.join(line.strip() for line in lines).strip()
    assert render_plain(body, MENTIONS) == render(body, MENTIONS)


# -- rendering off the event loop ------------------------------------------------------


async def find_bob(name: str) -> User | None:
    return BOB if name == "bob" else None


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    started = RenderPool(workers=2, budget=10.0)
    try:
        yield started
    finally:
        await started.close()
    assert started.pids == []


async def test_a_worker_renders_what_render_makes_and_plain_lines_need_none(pool: RenderPool) -> None:
    renderer = Renderer(find_bob, pool=pool)
    assert await renderer.render("just a plain line, hi bob") == "<p>just a plain line, hi bob</p>"
    assert pool.pids == []  # plain lines never start a worker

    bodies = ["**hi** @bob", "see https://example.com/x", "- one\n- two", "`code` _em_", "[http://" * 500, "[*" * 2000]
    rendered = await asyncio.gather(*(renderer.render_with_mentions(body) for body in bodies))

    assert rendered[0] == (render("**hi** @bob", MENTIONS), (BOB.id,))
    assert [html for html, _ in rendered] == [render(body, MENTIONS) for body in bodies]
    assert 1 <= len(pool.pids) <= 2  # six bodies at once, two workers at most


async def test_a_render_over_budget_is_stored_as_plain_text_and_its_worker_replaced(
    pool: RenderPool, caplog: pytest.LogCaptureFixture
) -> None:
    renderer = Renderer(find_bob, pool=pool)
    assert await renderer.render("*warm*") == "<p><em>warm</em></p>"
    (stuck,) = pool.pids
    pool.budget = 0.3
    # A worker that never answers: as a render that would never end.
    os.kill(stuck, signal.SIGSTOP)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="chat.services.conversation.formatting"):
        html, mentioned = await renderer.render_with_mentions("**hi** @bob <b>\nsee http://example.com")
    elapsed = time.perf_counter() - started
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker

    assert html == render_plain("**hi** @bob <b>\nsee http://example.com", MENTIONS)
    assert mentioned == (BOB.id,)
    assert [record.getMessage() for record in caplog.records] == [
        "a 38-character message is stored as plain text: rendering took over 0.3s; its worker was killed"
    ]
    assert 0.3 <= elapsed < 2.0
    assert ticks >= 10  # the loop went on meanwhile
    pool.budget = 10.0
    assert await renderer.render("**back**") == "<p><strong>back</strong></p>"
    assert stuck not in pool.pids
