"""What a chat process counts, in Prometheus's exposition format (``GET /metrics``).

Every process has its own registry (prometheus-client's default, one per
process), and Prometheus scrapes each process of a group directly on its own
port: nginx never passes ``/metrics`` on, and a process answers it only to
the deployment's own machines (``CHAT_TRUSTED_PROXIES``; see
``docs/operations.md`` for the scrape configuration and what each alert
means).

Metrics are module-level objects, the way prometheus-client means them to
be used: the code that sees an event counts it where it happens, services
included (this module has nothing to do with Tornado). The hot paths pay one
``inc()`` or ``observe()`` per message per process, never per socket: a
delivery to a thousand sockets is one ``inc(1000)``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from .errors import Unavailable

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

# Latency buckets (seconds): a chat message is fast at a few ms and broken at a few s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

SOCKETS_OPEN = Gauge("chat_sockets_open", "WebSockets open on this process", ["kind"])
ROOMS_LOCAL = Gauge("chat_rooms_with_local_listeners", "Rooms with at least one socket on this process")
MESSAGES_STORED = Counter("chat_messages_stored_total", "Messages this process stored (resends not counted)")
MESSAGES_DELIVERED = Counter(
    "chat_messages_delivered_total", "Message frames this process wrote to its sockets (one per socket)"
)
SEND_TO_ACK = Histogram(
    "chat_send_to_ack_seconds",
    "From a send frame read to its ack written, on the process holding the sender's socket",
    buckets=LATENCY_BUCKETS,
)
SEND_TO_DELIVERY = Histogram(
    "chat_send_to_delivery_seconds",
    "From a message's creation (when it was stored, on any process) to its delivery to this process's sockets",
    buckets=LATENCY_BUCKETS,
)
HANDSHAKES_REFUSED = Counter(
    "chat_handshakes_refused_total", "WebSocket handshakes refused, by HTTP status", ["status"]
)
LIMIT_REFUSALS = Counter("chat_limit_refusals_total", "Requests refused by a rate or count limit", ["kind"])
BROKER_RESYNCS = Counter(
    "chat_broker_resyncs_total", "Broker (re)connections after which rooms were caught up from storage"
)
STORAGE_SECONDS = Histogram(
    "chat_storage_seconds", "Storage operations, by store and operation", ["operation"], buckets=STORAGE_BUCKETS
)
STORAGE_ERRORS = Counter(
    "chat_storage_errors_total", "Storage operations that failed (database unavailable)", ["operation"]
)
SLOW_CONSUMERS = Counter(
    "chat_slow_consumer_disconnects_total", "Sockets closed because their client fell too far behind in reading"
)
HISTORY_SERVED = Counter(
    "chat_history_served_total",
    "History sent to a socket that opened or resumed, by where it came from: the room feed's memory, or storage"
    " (feed_behind: the feed was not current; not_remembered: the feed did not hold all of it)",
    ["source"],
)
LOOP_STALLS = Counter("chat_event_loop_stalls_total", "Times the event loop was blocked past CHAT_LOOP_STALL_SECONDS")

# The creation time inside a message frame's MSG (protocol.message_wire), read
# without parsing the whole frame: once per message per process.
_CREATED_AT = re.compile(r'"created_at":"([^"]+)"')


def observe_delivery(frame_text: str, sockets: int, now: Callable[[], float] = time.time) -> None:
    """Count a message frame written to ``sockets`` sockets, and how long after its creation."""
    MESSAGES_DELIVERED.inc(sockets)
    match = _CREATED_AT.search(frame_text)
    if match is None:
        return
    try:
        created = datetime.datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    except ValueError:
        return
    # Clocks of one deployment's machines agree well enough for this; a
    # negative difference (a clock behind) is counted as no delay.
    SEND_TO_DELIVERY.observe(max(0.0, now() - created.timestamp()))


def exposition() -> bytes:
    """Every metric of this process, in the text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


# The stores of chat.storage.base.Storage whose operations are timed.
MEASURED_STORES = ("users", "sessions", "rooms", "messages", "memberships", "bans", "moderation", "mentions")


def measure_storage(storage: object) -> None:
    """Time every operation of ``storage``'s stores and count the failed ones, once.

    Each store's coroutine methods are wrapped on the instance (what callers
    reach), labelled ``store.method``. A failure here is an outage
    (:class:`~chat.errors.Unavailable`); anything else is a refusal
    (a name taken, a room archived) and not an error of the database.
    """
    if getattr(storage, "_chat_measured", False):
        return
    for store_name in MEASURED_STORES:
        store = getattr(storage, store_name, None)
        if store is None:
            continue
        for name in dir(type(store)):
            method = getattr(store, name)
            if name.startswith("_") or not inspect.iscoroutinefunction(method):
                continue
            setattr(store, name, _measured(f"{store_name}.{name}", method))
    setattr(storage, "_chat_measured", True)  # noqa: B010 (a marker on any storage, typed or fake)


def _measured(operation: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    seconds = STORAGE_SECONDS.labels(operation)
    errors = STORAGE_ERRORS.labels(operation)

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        except Unavailable:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    return call


def watch(*, room_sockets: Callable[[], int], event_streams: Callable[[], int], rooms: Callable[[], int]) -> None:
    """Read the gauges from the serving process's own counts when scraped (nothing to keep in step)."""
    SOCKETS_OPEN.labels("room").set_function(room_sockets)
    SOCKETS_OPEN.labels("events").set_function(event_streams)
    ROOMS_LOCAL.set_function(rooms)
