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

Rendering a body costs time linear in its length, about 60 ms at worst for
4,000 characters (``[*`` repeated; bracketed bare links like ``[http://``
cost the square of the length until linkify's scheme search was bounded,
0.13 s then). The server still renders Markdown in worker processes, on a
time budget (:class:`Renderer` with a :class:`RenderPool`), so that neither a
slow body nor a parser bug found later can hold its event loop; a body over
budget is stored as plain text (:func:`render_plain`).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

import nh3
from cachetools import TTLCache
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

from ...models import User
from ...wire.text import USERNAME_MIN_LENGTH, USERNAME_REGEX
from .rendering_pool import RenderFailed, RenderPool

log = logging.getLogger(__name__)

# @name not preceded by a word character (an e-mail address is not a mention).
MENTION = re.compile(rf"(?<![\w@])@({USERNAME_REGEX})")
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
# A scheme is the run of scheme characters just before "://", and linkify
# knows none longer than "mailto": a link's is found in this many characters
# of text before it.
SCHEME_LOOKBEHIND = 32
_SCHEME = re.compile(r"(?:^|[^a-z0-9.+-])([a-z][a-z0-9.+-]*)$", re.IGNORECASE)

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
    md.inline.ruler.at("linkify", _linkify_within_bounds)
    # Typed as text in a chat, and meant as text: "# 1 fan", "---", ![...](tracking pixel).
    md.disable(["heading", "lheading", "hr", "image", "reference"])
    md.core.ruler.after("linkify", "mentions", _mark_mentions)
    return md


def _linkify_within_bounds(state: StateInline, silent: bool) -> bool:
    """A bare ``scheme://`` link, as markdown-it's own rule finds it, in time linear in the body.

    Its rule looks for the scheme with a regular expression over all the text
    pending since the last token, once per "://": a body of nothing but
    ``[http://`` (no token ever ends the pending text) cost the square of its
    length, 0.13 s for 4,000 characters. The scheme ends where the pending
    text ends, so searching its last SCHEME_LOOKBEHIND characters finds the
    same one; a run of scheme characters that fills them all is longer than
    any scheme, so no link, as the library would conclude too.
    """
    src, pos = state.src, state.pos
    if state.linkLevel > 0 or state.md.linkify is None or not src.startswith("://", pos):
        return False
    pending = state.pending
    # search(text, start) never matches "^" at start > 0: a run that fills the window finds nothing.
    scheme = _SCHEME.search(pending, max(0, len(pending) - SCHEME_LOOKBEHIND))
    if scheme is None:
        return False
    proto = scheme.group(1)
    link = state.md.linkify.match_at_start(src[pos - len(proto) :])
    if not link:
        return False
    url = link.url.rstrip("*")  # a trailing "*" closes emphasis, as in markdown-it
    href = state.md.normalizeLink(url)
    if not state.md.validateLink(href):
        return False
    if not silent:
        state.pending = pending[: -len(proto)]
        opening = state.push("link_open", "a", 1)
        opening.attrs = {"href": href}
        opening.markup, opening.info = "linkify", "auto"
        text = state.push("text", "", 0)
        text.content = state.md.normalizeLinkText(url)
        closing = state.push("link_close", "a", -1)
        closing.markup, closing.info = "linkify", "auto"
    state.pos += len(url) - len(proto)
    return True


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
        span.content = _mention_html(user)
        yield span
        start = at + 1 + length
    if start < len(text):
        yield _text(text[start:])


def _mention_html(user: User) -> str:
    return f"{mention_span(user.id)}@{html.escape(user.username)}</span>"


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
        return _plain_paragraph(body)
    return _render_markdown(body, mentions or {})


def _plain_paragraph(body: str) -> str:
    return f"<p>{body}</p>" if body else ""


def _render_markdown(body: str, mentions: Mapping[str, User]) -> str:
    return str(_SANITISER.clean(_MARKDOWN.render(body, {"mentions": mentions}))).strip()


def mention_span(user_id: str) -> str:
    """How a mention of ``user_id`` opens in rendered HTML (text can hold anything but this: "<" is escaped)."""
    return f'<span class="mention" data-user-id="{html.escape(user_id)}">'


def render_plain(body: str, mentions: Mapping[str, User] | None = None) -> str:
    """``body`` as text: paragraphs at blank lines, line breaks, mentions; no Markdown and no links.

    What a body gets when its Markdown could not be rendered in time
    (:class:`Renderer`): the message is stored and reads as typed, only
    unformatted. Plain lines come out as :func:`render` makes them.
    """
    users = mentions or {}
    paragraphs: list[list[str]] = [[]]
    for line in body.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd").split("\n"):
        line = line.strip(" \t")
        if line:
            paragraphs[-1].append(_plain_line(line, users))
        elif paragraphs[-1]:
            paragraphs.append([])
    marked = "\n".join("<p>" + "<br>\n".join(lines) + "</p>" for lines in paragraphs if lines)
    return str(_SANITISER.clean(marked)).strip()


def _plain_line(line: str, users: Mapping[str, User]) -> str:
    if not users or "@" not in line:
        return html.escape(line, quote=False)
    pieces = _split_mentions(_text(line), users)
    return "".join(p.content if p.type == "html_inline" else html.escape(p.content, quote=False) for p in pieces)


def for_reader(rendered: str, reader_id: str) -> str:
    """Mark the mentions of ``reader_id`` in rendered HTML (``mention-me``), for the page the server renders."""
    mine = f'class="mention" data-user-id="{html.escape(reader_id)}"'
    return rendered.replace(mine, f'class="mention mention-me" data-user-id="{html.escape(reader_id)}"')


FindUser = Callable[[str], Awaitable[User | None]]


class Renderer:
    """Renders bodies with their mentions resolved, remembering looked-up names for a minute.

    With a ``pool``, bodies that need Markdown are rendered in its worker
    processes, off the event loop; one it cannot render in time is rendered
    as plain text (:func:`render_plain`), never lost. Plain lines, most of
    what people send, are rendered here: it costs a regular expression.
    """

    def __init__(
        self, find_user: FindUser, cache_seconds: float = MENTION_CACHE_SECONDS, pool: RenderPool | None = None
    ) -> None:
        self._find_user = find_user
        self._known: TTLCache[str, User | None] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        self._pool = pool

    async def render(self, body: str) -> str:
        return (await self.render_with_mentions(body))[0]

    async def render_with_mentions(self, body: str) -> tuple[str, tuple[str, ...]]:
        """The HTML, and the ids of the users it mentions (not those named inside code or links)."""
        users = await self.users(mentioned_names(body))
        rendered = await self._render(body, users)
        # The span itself, not just its attribute: the sanitiser leaves quotes in
        # text as they are (`data-user-id="..."` can be typed), but never a "<".
        mentioned = {user.id for user in users.values() if mention_span(user.id) in rendered}
        return rendered, tuple(sorted(mentioned))

    async def _render(self, body: str, users: Mapping[str, User]) -> str:
        if PLAIN.fullmatch(body):
            return _plain_paragraph(body)
        if self._pool is None:
            return _render_markdown(body, users)
        try:
            return await self._pool.render(body, users)
        except RenderFailed as exc:
            log.warning("a %d-character message is stored as plain text: %s", len(body), exc)
            return render_plain(body, users)

    async def users(self, names: Collection[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for name in names:
            if name not in self._known:
                self._known[name] = await self._find_user(name)
            user = self._known.get(name)
            if user is not None:
                found[name] = user
        return found
