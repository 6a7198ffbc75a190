"""The client address and scheme, believed from trusted proxies only (checklist item 23, finding 8)."""

from __future__ import annotations

import ipaddress

import pytest

from chat.config import LOOPBACK
from chat.web.proxies import TrustedProxies, parse_address

NGINX = "127.0.0.1"
STRANGER = "198.51.100.7"
CLIENT = "203.0.113.9"

loopback = TrustedProxies(LOOPBACK)


def test_without_a_trusted_peer_forwarding_headers_are_ignored() -> None:
    headers = {"X-Real-IP": "1.2.3.4", "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}

    assert loopback.client_ip(STRANGER, headers) == STRANGER
    assert loopback.scheme(STRANGER, headers, "http") == "http"


def test_a_trusted_proxy_names_the_client_with_x_real_ip() -> None:
    assert loopback.client_ip(NGINX, {"X-Real-IP": CLIENT}) == CLIENT


def test_a_trusted_proxy_without_forwarding_headers_is_the_client() -> None:
    assert loopback.client_ip(NGINX, {}) == NGINX
    assert loopback.client_ip(NGINX, {"X-Real-IP": "not an address"}) == NGINX


def test_x_forwarded_for_is_read_from_the_right_past_trusted_proxies() -> None:
    # The client wrote "6.6.6.6" itself; nginx appended the address it saw.
    headers = {"X-Forwarded-For": f"6.6.6.6, {CLIENT}", "X-Real-IP": CLIENT}

    assert loopback.client_ip(NGINX, headers) == CLIENT


def test_chained_trusted_proxies_are_skipped() -> None:
    proxies = TrustedProxies([*LOOPBACK, ipaddress.ip_network("10.0.0.0/8")])
    headers = {"X-Forwarded-For": f"6.6.6.6, {CLIENT}, 10.1.1.1, 10.2.2.2"}

    assert proxies.client_ip(NGINX, headers) == CLIENT


def test_only_trusted_hops_means_the_left_most() -> None:
    assert loopback.client_ip(NGINX, {"X-Forwarded-For": "127.0.0.2, 127.0.0.3"}) == "127.0.0.2"


def test_a_garbage_hop_stops_the_walk_at_the_last_proxy() -> None:
    assert loopback.client_ip(NGINX, {"X-Forwarded-For": "<script>, 127.0.0.5"}) == "127.0.0.5"


def test_no_trusted_proxies_believes_nobody() -> None:
    assert TrustedProxies([]).client_ip(NGINX, {"X-Real-IP": CLIENT}) == NGINX


def test_ipv4_mapped_ipv6_peers_count_as_their_ipv4_address() -> None:
    assert loopback.trusts("::ffff:127.0.0.1")
    assert loopback.client_ip("::ffff:127.0.0.1", {"X-Real-IP": CLIENT}) == CLIENT
    assert parse_address("::ffff:203.0.113.9") == ipaddress.ip_address(CLIENT)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Forwarded-Proto": "https"}, "https"),
        ({"X-Scheme": "https"}, "https"),
        ({"X-Forwarded-Proto": "HTTPS"}, "https"),
        ({"X-Forwarded-Proto": "http, https"}, "https"),
        ({"X-Forwarded-Proto": "ftp"}, "http"),
        ({"X-Forwarded-Proto": "https\r\nX: y"}, "http"),
        ({}, "http"),
    ],
)
def test_a_trusted_proxy_names_the_scheme(headers: dict[str, str], expected: str) -> None:
    assert loopback.scheme(NGINX, headers, "http") == expected
