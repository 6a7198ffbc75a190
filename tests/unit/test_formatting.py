"""Message bodies rendered to HTML: the Markdown subset, links, mentions, and XSS that stays text."""

from __future__ import annotations

import datetime
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.models import User
from chat.services import formatting
from chat.services.formatting import Renderer, for_reader, mentioned_names, render
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
