"""The ``sqlite:///PATH`` URL: one file, for one process."""

from __future__ import annotations

from ..base import Backend, Storage

PREFIX = "sqlite:///"


def file_path(url: str) -> str:
    """The file a SQLite URL names (``:memory:`` for none); ValueError if it is not one."""
    # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
    if not url.startswith(PREFIX) or len(url) == len(PREFIX):
        raise ValueError("a SQLite URL is sqlite:/// followed by the file's path")
    return url[len(PREFIX) :]


def check_url(url: str) -> None:
    file_path(url)


def open_url(url: str) -> Storage:
    from .storage import SQLiteStorage

    return SQLiteStorage(file_path(url))


BACKEND = Backend(
    name="SQLite",
    schemes=frozenset({"sqlite"}),
    forms="sqlite:///relative/path, sqlite:////absolute/path",
    check=check_url,
    open=open_url,
    addresses=lambda url: [],
    shared=False,
)
