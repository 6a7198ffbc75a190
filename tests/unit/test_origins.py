"""Origins are compared exactly: scheme, host and port (checklist item 10, finding 7)."""

from __future__ import annotations

import pytest

from chat.origins import normalize_origin, site_origin, socket_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://chat.example.org", "https://chat.example.org"),
        ("HTTPS://Chat.Example.ORG", "https://chat.example.org"),
        ("https://chat.example.org:443", "https://chat.example.org"),
        ("http://chat.example.org:80", "http://chat.example.org"),
        ("http://127.0.0.1:8888", "http://127.0.0.1:8888"),
        ("https://chat.example.org:8443", "https://chat.example.org:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://chat.example.org.", "http://chat.example.org"),
    ],
)
def test_origins_are_normalized(value: str, expected: str) -> None:
    assert normalize_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "null",
        "chat.example.org",
        "ftp://chat.example.org",
        "file://",
        "ws://chat.example.org",
        "https://chat.example.org/",
        "https://chat.example.org/path",
        "https://chat.example.org?x=1",
        "https://chat.example.org#x",
        "https://user@chat.example.org",
        "https://chat.example.org:99999",
        "https://chat.example.org:port",
        "https://chat example.org",
        "https://chat.example.org\r\nX-Injected: 1",
        "https://chat.exämple.org",
        "https://-bad-.example",
        "https://[not-ipv6]",
        "https://" + "a." * 127 + "example",  # longer than any DNS name
    ],
)
def test_anything_else_is_not_an_origin(value: str | None) -> None:
    assert normalize_origin(value) is None


@pytest.mark.parametrize(
    "other",
    [
        "https://app.example.com.evil.example",  # our name as a prefix
        "https://evil-app.example.com",  # as a suffix
        "https://evil.example",
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "https://sub.app.example.com",
    ],
)
def test_lookalikes_are_different_origins(other: str) -> None:
    assert normalize_origin(other) != normalize_origin("https://app.example.com")


def test_the_site_origin_is_the_scheme_used_and_the_host_header() -> None:
    assert site_origin("https", "App.Example.com") == "https://app.example.com"
    assert site_origin("http", "127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert site_origin("http", "127.0.0.1:80") == "http://127.0.0.1"
    assert site_origin("http", None) is None
    assert site_origin("http", "evil.example/path") is None
    assert site_origin("http", "x; script-src *") is None  # never reflected into a header


def test_the_socket_origin_of_a_page_origin() -> None:
    assert socket_origin("https://chat.example.org") == "wss://chat.example.org"
    assert socket_origin("http://127.0.0.1:8888") == "ws://127.0.0.1:8888"
