"""Who is really asking: the client address and scheme, believed from trusted proxies only.

Behind nginx every request comes from nginx, which says who its client was
in ``X-Forwarded-For``/``X-Real-IP`` and which scheme it used in
``X-Forwarded-Proto``/``X-Scheme``. Anyone can send those headers, though, so
they are believed only when the direct peer is one of the configured proxies
(``CHAT_TRUSTED_PROXIES``, loopback by default). Tornado's own ``xheaders``
believes them from anyone who reaches a process port, which is why it is
not used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address, IPv4-mapped IPv6 reduced to IPv4; None if ``text`` is not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str | IPAddress | None) -> bool:
        """Whether ``address`` is in one of the trusted networks."""
        parsed = parse_address(address) if isinstance(address, str) or address is None else address
        return parsed is not None and any(parsed in network for network in self.networks)

    def client_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client's address: ``peer`` itself, unless ``peer`` is a trusted proxy that forwarded one.

        ``X-Forwarded-For`` is read from the right (each proxy appends the
        address it saw): the first hop that is not itself a trusted proxy is
        the client; everything to its left was written by the client and may
        be made up. Without it, ``X-Real-IP`` names the client.
        """
        if not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if hops:
            client = peer
            for hop in reversed(hops):
                address = parse_address(hop)
                if address is None:  # garbage: stop at the last proxy that made sense
                    break
                client = str(address)
                if not self.trusts(address):
                    break
            return client
        real_ip = parse_address(headers.get("X-Real-IP"))
        return str(real_ip) if real_ip is not None else peer

    def scheme(self, peer: str, headers: Mapping[str, str], direct: str) -> str:
        """The scheme the client used: ``direct``, unless a trusted proxy says it used another."""
        if self.trusts(peer):
            forwarded = headers.get("X-Forwarded-Proto") or headers.get("X-Scheme") or ""
            # Chained proxies may list several; the last was added by the one next to us.
            claimed = forwarded.split(",")[-1].strip().lower()
            if claimed in SCHEMES:
                return claimed
        return direct
