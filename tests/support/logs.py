"""Server logs in the report of a failed test: fixtures register sources, a hook reads them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

LogSource = tuple[str, Callable[[], str]]


def add_log_source(request: pytest.FixtureRequest, title: str, read: Callable[[], str]) -> None:
    """Show ``read()`` under ``title`` in the report if the test fails."""
    request.node.log_sources = [*log_sources(request.node), (title, read)]


def log_sources(item: pytest.Item) -> list[LogSource]:
    return getattr(item, "log_sources", [])
