"""Templates load scripts from files only, so the CSP needs no 'unsafe-inline' (checklist item 21)."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

from chat.models import Message
from chat.web.rendering import message_rows

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "templates").glob("*.html"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_no_inline_script_and_no_event_handler_attributes(template: Path) -> None:
    text = template.read_text()
    for tag in re.findall(r"<script\b[^>]*>", text, re.I):
        assert re.search(r"\bsrc=", tag), f"inline script in {template.name}: {tag}"
    assert not re.findall(r"<script\b[^>]*>\s*[^<\s]", text, re.I), f"script with a body in {template.name}"
    assert not re.findall(r"<[^>]+\son[a-z]+\s*=", text, re.I), f"on* attribute in {template.name}"
    assert "javascript:" not in text.lower(), f"javascript: URL in {template.name}"
    assert not re.findall(r"<style\b|\sstyle\s*=", text, re.I), f"inline style in {template.name}"


def test_every_template_was_checked() -> None:
    assert {path.name for path in TEMPLATES} >= {"base.html", "room.html", "rooms.html", "login.html", "register.html"}


def test_every_page_template_has_a_logout_control_for_a_signed_in_user() -> None:
    # Every page extends base.html, whose header has the sign-out form when
    # someone is signed in (checklist item 8; the integration tests check
    # the rendered pages).
    base = (TEMPLATES[0].parent / "base.html").read_text()
    assert re.search(r'{% if current_user %}.*<form[^>]*method="post"[^>]*action="/logout"', base, re.S)
    for template in TEMPLATES:
        if template.name.startswith("_") or template.name == "base.html":
            continue
        assert template.read_text().lstrip().startswith(('{% extends "base.html" %}', '{% extends "error.html" %}'))


def test_message_rows_group_an_authors_run_and_mark_each_new_day() -> None:
    def at(seq: int, user: str, when: str) -> Message:
        moment = datetime.datetime.fromisoformat(when).replace(tzinfo=datetime.UTC)
        return Message(f"m{seq}", "r", seq, user, user, "hi", moment, f"c{seq}")

    rows = message_rows(
        [
            at(1, "ann", "2026-11-27T23:50"),
            at(2, "ann", "2026-11-27T23:54"),  # within five minutes: under ann's name
            at(3, "ann", "2026-11-28T00:01"),  # a new day (UTC here) always names the author
            at(4, "ann", "2026-11-28T00:10"),  # nine minutes later
            at(5, "ben", "2026-11-28T00:11"),
        ]
    )
    assert [row.continued for row in rows] == [False, True, False, False, False]
    assert [row.day for row in rows] == ["Friday 27 November 2026", None, "Saturday 28 November 2026", None, None]
