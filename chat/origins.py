"""Web origins (scheme, host and port), compared exactly.

An origin is written ``scheme://host[:port]``; two origins are the same only
if all three parts are (RFC 6454). Comparing normalized text, never
prefixes or suffixes, is what makes ``https://app.example.com.evil.example``
a different site from ``https://app.example.com``. The settings (the list of
public origins), the WebSocket handshake (the ``Origin`` header) and the
page headers (CSP ``connect-src``) all go through :func:`normalize_origin`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# The WebSocket scheme that goes with a page's scheme.
SOCKET_SCHEMES = {"http": "ws", "https": "wss"}
# A DNS name or an IPv4 address (IPv6 is checked separately): what a browser
# can put in an Origin header, so anything else is not an origin we serve.
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
_IPV6 = re.compile(r"[0-9a-f:.]+")
# DNS names are at most 253 characters; a longer Host is not echoed anywhere.
MAX_HOST_LENGTH = 253


def normalize_origin(value: str | None) -> str | None:
    """``value`` as a canonical origin (lower case, default port left out), or None if it is not one.

    ``null``, other schemes, user names, paths, queries, fragments, control
    characters and bad ports are all "not an origin".
    """
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = (parts.hostname or "").rstrip(".")
    if len(host) > MAX_HOST_LENGTH:
        return None
    if ":" in host:
        if not _IPV6.fullmatch(host):
            return None
        host = f"[{host}]"
    elif not host or not _HOSTNAME.fullmatch(host):
        return None
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def site_origin(scheme: str, host_header: str | None) -> str | None:
    """The origin a request was addressed to: its scheme and its ``Host`` header (None if malformed)."""
    if not host_header:
        return None
    return normalize_origin(f"{scheme}://{host_header}")


def socket_origin(origin: str) -> str:
    """The ``ws://`` or ``wss://`` form of a (normalized) page origin, for CSP ``connect-src``."""
    scheme, rest = origin.split("://", 1)
    return f"{SOCKET_SCHEMES[scheme]}://{rest}"
