"""Accessibility checks in a real page: axe-core (from npm, pinned in package-lock.json) run by Playwright.

The site's pages send a strict Content-Security-Policy (``script-src 'self'``,
no ``unsafe-eval``), so axe cannot be added as an inline ``<script>``. It does
not need to be: ``page.evaluate`` hands the source to the DevTools protocol
(``Runtime.evaluate``), which CSP does not govern, and axe itself needs no
``eval``. The page is checked under the very policy real visitors get; no
``bypass_csp`` context.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .services import PROJECT_ROOT, missing_service

if TYPE_CHECKING:
    # Only the e2e tier has a browser; importing this module must not need Playwright.
    from playwright.async_api import Page

AXE_PATH = PROJECT_ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_INSTALL_HINT = "run `npm ci` (or `make test`) to install axe-core"

# WCAG 2.2 level AA, as axe tags it (each version's A and AA rules; 2.2 added AA rules only).
# Not "best-practice": those rules are advice, not conformance.
WCAG_AA_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]

# How much of each violation describe() shows: enough to find the element, not a page of HTML.
MAX_NODES_PER_RULE = 6
MAX_SUMMARY_CHARS = 400

_RUN_AXE = """async ({tags, exclude}) => {
    const context = exclude.length ? {include: [document], exclude: exclude.map((selector) => [selector])} : document;
    const results = await axe.run(context, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
    return results.violations;
}"""


def axe_source_path() -> Path:
    """The installed axe.min.js; skips (or fails under CI=true) when node_modules lacks it."""
    if not AXE_PATH.is_file():
        missing_service(f"axe-core not found at {AXE_PATH.relative_to(PROJECT_ROOT)}: {AXE_INSTALL_HINT}")
    return AXE_PATH


@functools.cache
def _axe_source(path: Path) -> str:
    # A trailing expression of our own, so evaluate() returns nothing instead of whatever the bundle's last one is.
    return path.read_text(encoding="utf-8") + "\n;undefined;"


async def inject_axe(page: Page) -> None:
    """Define ``window.axe`` in the page's current document (once per document)."""
    if await page.evaluate("() => typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        return
    await page.evaluate(_axe_source(axe_source_path()))
    if not await page.evaluate("() => typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        raise AssertionError(f"injecting axe-core into {page.url} did not define window.axe")


async def axe_violations(page: Page, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
    """Run axe's WCAG 2.2 A/AA rules over the page as it is now; returns axe's violation objects.

    ``exclude`` lists CSS selectors of parts not to check (third-party widgets, say).
    """
    await inject_axe(page)
    violations: list[dict[str, Any]] = await page.evaluate(_RUN_AXE, {"tags": WCAG_AA_TAGS, "exclude": exclude or []})
    return violations


def _one_line(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    text = re.sub(r"\s*\n\s*", "; ", text.strip())
    text = text.replace(":; ", ": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _target(node: dict[str, Any]) -> str:
    # A selector per frame (and per shadow root, as a nested list); " >>> " joins them like axe's docs do.
    parts = node.get("target") or ["?"]
    return " >>> ".join(" ".join(part) if isinstance(part, list) else str(part) for part in parts)


def describe(violations: list[dict[str, Any]]) -> str:
    """The violations as readable text for an assertion message: one block per rule, one line per element."""
    if not violations:
        return "no accessibility violations"
    nodes = sum(len(violation.get("nodes", [])) for violation in violations)
    lines = [f"{len(violations)} accessibility rule(s) violated on {nodes} element(s):"]
    for violation in violations:
        rule_nodes: list[dict[str, Any]] = violation.get("nodes", [])
        lines.append(
            f"- {violation.get('id')} ({violation.get('impact') or 'no impact given'}): {violation.get('help')}"
            f" [{len(rule_nodes)} element(s)] {violation.get('helpUrl', '')}".rstrip()
        )
        for node in rule_nodes[:MAX_NODES_PER_RULE]:
            summary = _one_line(node.get("failureSummary") or "")
            lines.append(f"    {_target(node)}")
            if summary:
                lines.append(f"        {summary}")
        if len(rule_nodes) > MAX_NODES_PER_RULE:
            lines.append(f"    … and {len(rule_nodes) - MAX_NODES_PER_RULE} more element(s)")
    return "\n".join(lines)
