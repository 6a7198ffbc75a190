"""chat/metrics.py: what the hot paths count, and the dashboard that reads it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from chat import metrics
from chat.errors import Unavailable

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_delivery_counts_one_frame_per_socket_and_its_delay_once() -> None:
    delivered, observed = sample("chat_messages_delivered_total"), sample("chat_send_to_delivery_seconds_count")
    frame = '{"type":"message","message":{"seq":1,"created_at":"2026-01-01T00:00:00.000Z","body":"x"}}'
    metrics.observe_delivery(frame, 250, now=lambda: 1767225600.25)  # 0.25 s after created_at
    assert sample("chat_messages_delivered_total") == delivered + 250
    assert sample("chat_send_to_delivery_seconds_count") == observed + 1
    assert sample("chat_send_to_delivery_seconds_bucket", {"le": "0.25"}) >= 1
    metrics.observe_delivery('{"type":"presence"}', 3)  # no creation time: counted, not timed
    assert sample("chat_send_to_delivery_seconds_count") == observed + 1


class FakeMessages:
    def __init__(self) -> None:
        self.fail = False

    async def latest(self, room_id: str, limit: int) -> list[str]:
        if self.fail:
            raise Unavailable("database down")
        return [room_id] * limit

    def not_a_coroutine(self) -> str:
        return "left alone"


class FakeStorage:
    def __init__(self) -> None:
        self.messages = FakeMessages()


async def test_storage_operations_are_timed_and_outages_counted_once_wrapped() -> None:
    storage = FakeStorage()
    metrics.measure_storage(storage)
    metrics.measure_storage(storage)  # a second build of the services does not wrap twice
    labels = {"operation": "messages.latest"}
    count, errors = sample("chat_storage_seconds_count", labels), sample("chat_storage_errors_total", labels)
    assert await storage.messages.latest("r", 2) == ["r", "r"]
    storage.messages.fail = True
    with pytest.raises(Unavailable):
        await storage.messages.latest("r", 2)
    assert sample("chat_storage_seconds_count", labels) == count + 2
    assert sample("chat_storage_errors_total", labels) == errors + 1
    assert storage.messages.not_a_coroutine() == "left alone"


def test_the_dashboard_reads_only_metrics_that_exist_and_shows_every_one() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bchat_[a-z_]+", target["expr"])
    }
    families = {metric.name: metric.type for metric in REGISTRY.collect() if metric.name.startswith("chat_")}
    # The names a query may use: a counter's _total, a histogram's _bucket.
    exposed = {name + {"counter": "_total", "histogram": "_bucket"}.get(kind, "") for name, kind in families.items()}
    assert queried <= exposed, queried - exposed
    assert exposed <= queried, f"not on the dashboard: {exposed - queried}"
