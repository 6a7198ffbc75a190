"""The bench tool runs end to end: a chat process and the baseline, real sockets, a report."""

from __future__ import annotations

import json
from pathlib import Path

from chat.tools.bench.__main__ import main


def test_a_small_bench_delivers_everything_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["--targets", "chat,baseline", "--sockets", "20", "--rooms", "2", "--window", "2", "--seconds", "1"]

    assert main([*argv, "--out", str(out)]) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["machine"]["cpus"]
    chat, baseline = report["scenarios"]
    assert (chat["target"], baseline["target"]) == ("chat", "baseline")
    for scenario in (chat, baseline):
        assert scenario["acked"] > 0 and scenario["errors"] == {} and scenario["disconnects"] == 0
        # Every acked message reached every member of its room, once.
        assert scenario["deliveries"] == scenario["expected_deliveries"]
        assert (scenario["missing"], scenario["duplicates"]) == (0, 0)
        assert scenario["stored_messages_per_second"] > 0
        assert scenario["delivery_ms"]["p50"] > 0
    assert chat["baseline_ratio"] is not None
    # What its database alone accepts, measured in the same run (the baseline stores nothing).
    assert chat["ceilings"]["storage"] > 0 and baseline["ceilings"] == {}
    assert chat["server_rss_per_socket_kib"] is not None
    assert "| chat | 20 | 2 | window 2 |" in (out / "report.md").read_text()
    assert (out / "latency-cdf.png").stat().st_size > 1000
