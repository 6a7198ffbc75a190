"""The ``mongodb://`` and ``mongodb+srv://`` URLs, checked by the driver's own parser (no connection, no DNS)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..base import Backend, Storage


def check_url(url: str) -> None:
    """ValueError saying what is wrong with a MongoDB URL, if anything."""
    if urlsplit(url).scheme.lower() == "mongodb+srv":
        # Checking more would resolve DNS; the driver says what it finds.
        if not _first_host(url):
            raise ValueError("no host name")
        return
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    try:
        parse_uri(url)
    except PyMongoError as exc:
        raise ValueError(str(exc)) from None


def addresses(url: str) -> list[tuple[str, int | None]]:
    """Where the servers a ``mongodb://`` URL lists answer; none for ``mongodb+srv://`` (DNS decides)."""
    if urlsplit(url).scheme.lower() != "mongodb":
        return []
    from pymongo.uri_parser import parse_uri

    return [(host, None if host.endswith(".sock") else port) for host, port in parse_uri(url)["nodelist"]]


def _first_host(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2].split(",")[0].rsplit(":", 1)[0].strip("[]")


def open_url(url: str) -> Storage:
    from .storage import MongoStorage

    return MongoStorage.from_url(url)


BACKEND = Backend(
    name="MongoDB",
    schemes=frozenset({"mongodb", "mongodb+srv"}),
    forms="mongodb://[user:password@]host[:port][,host:port...]/database[?options] or mongodb+srv://host/database",
    check=check_url,
    open=open_url,
    addresses=addresses,
    shared=True,
)
