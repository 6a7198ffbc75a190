"""The HTTP server of a process: Tornado's, guarded against clients that hold connections open.

Behind nginx every connection comes from a trusted proxy, which has its own
timeouts and limits. A process port reached directly (``make run``, a
deployment without nginx) meets clients itself, so for peers outside
``CHAT_TRUSTED_PROXIES`` the server:

* caps the connections one client holds at once (``CHAT_MAX_CONNECTIONS_PER_IP``;
  an IPv6 client counted by its network, as the other per-address limits
  count it), closing the one too many at once;
* gives a request's headers ``CHAT_HEADER_TIMEOUT_SECONDS`` to arrive (a
  slowloris trickles them forever), where the trusted proxy's idle
  keep-alive connections keep the long timeout that makes nginx close first.

A WebSocket leaves this count once upgraded (its stream belongs to the
socket then); sockets are capped per user and per address by their own
limits (chat.services.realtime.connection).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import tornado.httpserver
import tornado.iostream

from ..services import audit
from .proxies import TrustedProxies

log = logging.getLogger(__name__)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer that caps connections per untrusted client and times out their slow headers.

    Configure with :meth:`guard` after construction (``HTTPServer`` builds
    itself through ``initialize``, which takes Tornado's own options).
    """

    _proxies: TrustedProxies | None = None

    def guard(
        self,
        proxies: TrustedProxies,
        client_key: Callable[[str], str],
        max_connections_per_client: int,
        header_timeout: float,
    ) -> None:
        self._proxies = proxies
        self._client_key = client_key
        self._max_per_client = max_connections_per_client
        self._public_params = copy.copy(self.conn_params)
        self._public_params.header_timeout = header_timeout
        self._open: Counter[str] = Counter()
        # stream -> the client key it is counted under, until its connection closes
        self._counted: dict[int, str] = {}

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        peer = str(address[0]) if address else ""
        if self._proxies is None or not peer or self._proxies.trusts(peer):
            super().handle_stream(stream, address)
            return
        client = self._client_key(peer)
        if self._open[client] >= self._max_per_client:
            # Closed unread: an answer would be lost anyway, reset with the
            # request the client has already sent.
            audit.throttled("connection_refused", client, ip=client, reason="too many connections")
            stream.close()
            return
        self._open[client] += 1
        self._counted[id(stream)] = client
        # handle_stream hands the parameters to the connection it makes, at once.
        trusted_params, self.conn_params = self.conn_params, self._public_params
        try:
            super().handle_stream(stream, address)
        finally:
            self.conn_params = trusted_params

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        stream = getattr(server_conn, "stream", None)
        client = self._counted.pop(id(stream), None) if stream is not None else None
        if client is not None:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]
