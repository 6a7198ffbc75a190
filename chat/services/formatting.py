"""Message bodies as HTML: a Markdown subset, links and @mentions, through an allow-list sanitiser.

A message is stored as written (``body``) and rendered once, when it is
stored or edited, into ``html``, which travels beside the body (MSG's
``html``): the page the server renders and the page the script updates show
the same markup, and no reader renders it again.

Markdown is markdown-it-py's CommonMark with raw HTML off and only what a
chat needs: emphasis, code spans and blocks, quotes, lists, links. Headings,
rules and images are left as the text they were typed as. Links are http and
https only: explicit ones, ``<autolinks>`` and bare URLs (linkify). Every
link opens in a new tab with ``rel="noopener noreferrer nofollow"``. Then nh3
(ammonia) keeps only the tags and attributes listed here, as a second line of
defence should the Markdown layer ever let something through.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

import nh3
from cachetools import TTLCache
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..models import User
from .accounts import USERNAME_CHARACTERS, USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH

# @name not preceded by a word character (an e-mail address is not a mention).
MENTION = re.compile(rf"(?<![\w@])@([{USERNAME_CHARACTERS}]{{{USERNAME_MIN_LENGTH},{USERNAME_MAX_LENGTH}}})")
# Looked up per message at most; more @names than this stay plain text.
MAX_MENTIONS = 20
# How long a looked-up name is trusted (a user registering later is highlighted after this).
MENTION_CACHE_SECONDS = 60.0
LINK_SCHEMES = ("http://", "https://")
# Words, spaces and the punctuation no Markdown rule, link or mention starts
# with: such a body is one paragraph of itself, and rendering it through
# Markdown (about 0.3 ms) would change nothing. Most chat lines are like this.
PLAIN = re.compile(r"(?:[^\W_]|[ ,;'\"?])*")
LINK_REL = "noopener noreferrer nofollow"

_SANITISER = nh3.Cleaner(
    tags={"p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span"},
    attributes={"a": {"href"}, "ol": {"start"}, "span": {"data-user-id"}},
    tag_attribute_values={"span": {"class": {"mention"}}},
    set_tag_attribute_values={"a": {"target": "_blank"}},
    link_rel=LINK_REL,
    url_schemes={"http", "https"},
    clean_content_tags={"script", "style"},
    strip_comments=True,
)


class _ChatMarkdown(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        # http and https only: not mailto:, ftp:, data:, javascript: or any other.
        return url.strip().lower().startswith(LINK_SCHEMES)


def _markdown() -> MarkdownIt:
    md = _ChatMarkdown("commonmark", {"html": False, "linkify": True, "breaks": True})
    md.enable("linkify")
    # Typed as text in a chat, and meant as text: "# 1 fan", "---", ![...](tracking pixel).
    md.disable(["heading", "lheading", "hr", "image", "reference"])
    md.core.ruler.after("linkify", "mentions", _mark_mentions)
    return md


def _mark_mentions(state: object) -> None:
    """Turn each ``@name`` of a known user in plain text (not code, not a link) into a mention span."""
    users: Mapping[str, User] = getattr(state, "env", {}).get("mentions", {})
    if not users:
        return
    for block in getattr(state, "tokens", []):
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        in_link = 0
        for token in block.children:
            if token.type == "link_open":
                in_link += 1
            elif token.type == "link_close":
                in_link -= 1
            if token.type == "text" and not in_link and "@" in token.content:
                children.extend(_split_mentions(token, users))
            else:
                children.append(token)
        block.children = children


def _split_mentions(token: Token, users: Mapping[str, User]) -> Iterable[Token]:
    text, start = token.content, 0
    for match in MENTION.finditer(text):
        user, length = _known(match.group(1), users)
        if user is None:
            continue
        at = match.start()
        if at > start:
            yield _text(text[start:at])
        span = Token("html_inline", "", 0)
        span.content = (
            f'<span class="mention" data-user-id="{html.escape(user.id)}">@{html.escape(user.username)}</span>'
        )
        yield span
        start = at + 1 + length
    if start < len(text):
        yield _text(text[start:])


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _known(name: str, users: Mapping[str, User]) -> tuple[User | None, int]:
    """The user ``name`` names, trying it without trailing dots and dashes too ("@bob." ends a sentence)."""
    for candidate in _candidates(name):
        user = users.get(candidate.lower())
        if user is not None:
            return user, len(candidate)
    return None, 0


def _candidates(name: str) -> list[str]:
    trimmed = name.rstrip(".-")
    return [name] if trimmed == name or len(trimmed) < USERNAME_MIN_LENGTH else [name, trimmed]


def mentioned_names(body: str) -> set[str]:
    """The lower-case names ``body`` may mention (at most MAX_MENTIONS), for look-up before rendering."""
    names: set[str] = set()
    for match in MENTION.finditer(body):
        names.update(candidate.lower() for candidate in _candidates(match.group(1)))
        if len(names) >= MAX_MENTIONS:
            break
    return names


_MARKDOWN = _markdown()


def render(body: str, mentions: Mapping[str, User] | None = None) -> str:
    """``body`` as sanitised HTML; ``mentions`` maps lower-case names to the users they highlight."""
    if PLAIN.fullmatch(body):
        return f"<p>{body}</p>" if body else ""
    return str(_SANITISER.clean(_MARKDOWN.render(body, {"mentions": mentions or {}}))).strip()


def mention_span(user_id: str) -> str:
    """How a mention of ``user_id`` opens in rendered HTML (text can hold anything but this: "<" is escaped)."""
    return f'<span class="mention" data-user-id="{html.escape(user_id)}">'


def for_reader(rendered: str, reader_id: str) -> str:
    """Mark the mentions of ``reader_id`` in rendered HTML (``mention-me``), for the page the server renders."""
    mine = f'class="mention" data-user-id="{html.escape(reader_id)}"'
    return rendered.replace(mine, f'class="mention mention-me" data-user-id="{html.escape(reader_id)}"')


FindUser = Callable[[str], Awaitable[User | None]]


class Renderer:
    """Renders bodies with their mentions resolved, remembering looked-up names for a minute."""

    def __init__(self, find_user: FindUser, cache_seconds: float = MENTION_CACHE_SECONDS) -> None:
        self._find_user = find_user
        self._known: TTLCache[str, User | None] = TTLCache(maxsize=10_000, ttl=cache_seconds)

    async def render(self, body: str) -> str:
        return (await self.render_with_mentions(body))[0]

    async def render_with_mentions(self, body: str) -> tuple[str, tuple[str, ...]]:
        """The HTML, and the ids of the users it mentions (not those named inside code or links)."""
        users = await self.users(mentioned_names(body))
        rendered = render(body, users)
        # The span itself, not just its attribute: the sanitiser leaves quotes in
        # text as they are (`data-user-id="..."` can be typed), but never a "<".
        mentioned = {user.id for user in users.values() if mention_span(user.id) in rendered}
        return rendered, tuple(sorted(mentioned))

    async def users(self, names: Collection[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for name in names:
            if name not in self._known:
                self._known[name] = await self._find_user(name)
            user = self._known.get(name)
            if user is not None:
                found[name] = user
        return found
