"""What a bench run found: per-scenario results, a Markdown table, JSON and PNG plots."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


def percentiles(samples: Any) -> dict[str, float]:
    values = np.asarray(samples, dtype=np.float64)
    if not len(values):
        return {**{f"p{p}": float("nan") for p in PERCENTILES}, "max": float("nan")}
    found = np.percentile(values, PERCENTILES)
    return {
        **{f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, found, strict=True)},
        "max": round(float(values.max()), 2),
    }


@dataclass
class RestartResult:
    """Every chat process restarted mid-run: how the dropped sockets came back, and what they hold."""

    dropped: int
    resumed: int
    # From the first socket dropped to the last one back (hello and history).
    all_back_seconds: float | None
    resume_ms: dict[str, float]
    # From the restart command to every new process answering: the least "all back" can be.
    processes_up_seconds: float | None
    # Nothing lost means all of these are 0.
    still_down: int
    gaps: int
    duplicates: int
    resets: int
    unacked: int
    # Sockets holding less than the last seq another socket of their room holds.
    behind: int

    @property
    def nothing_lost(self) -> bool:
        return not (self.still_down or self.gaps or self.duplicates or self.resets or self.unacked or self.behind)


@dataclass
class ScenarioResult:
    target: str
    sockets: int
    rooms: int
    mode: str  # "window 8" or "rate 500/s"
    seconds: float
    sent: int = 0
    acked: int = 0
    # Messages offered (the fixed rate; None when saturating) and stored (acked) per second.
    offered_messages_per_second: float | None = None
    stored_messages_per_second: float = 0.0
    # Over every receiving socket: seqs it never got (holes in its stream, or
    # short of the room's last at the end) and seqs it got twice.
    missing: int = 0
    duplicates: int = 0
    deliveries: int = 0
    # Each acked message should reach every member of its room.
    expected_deliveries: int = 0
    deliveries_per_second: float = 0.0
    offered_deliveries_per_second: float | None = None
    ack_ms: dict[str, float] = field(default_factory=dict)
    delivery_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    connect_failures: int = 0
    disconnects: int = 0
    handshakes_per_second: float = 0.0
    server_rss_per_socket_kib: float | None = None
    server_cpu_percent: float | None = None
    client_cpu_percent: float = 0.0
    # What the target's database and broker alone accept, measured when its
    # servers started (chat.tools.bench.ceilings): "storage" messages/s, "broker" publishes/s.
    ceilings: dict[str, float] = field(default_factory=dict)
    # nginx, Redis, the database (a cluster target): CPU % each.
    infrastructure_cpu_percent: dict[str, float] = field(default_factory=dict)
    baseline_ratio: float | None = None
    restart: RestartResult | None = None
    # Kept for the CDF plot, not written to JSON.
    delivery_samples: Any = field(default=None, repr=False)

    @property
    def room_size(self) -> int:
        return self.sockets // max(self.rooms, 1)

    def key(self) -> tuple[int, int, str]:
        return (self.sockets, self.rooms, self.mode)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("delivery_samples")
        data["room_size"] = self.room_size
        return data


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def add_baseline_ratios(results: list[ScenarioResult]) -> None:
    baselines = {r.key(): r for r in results if r.target.startswith("baseline")}
    for result in results:
        base = baselines.get(result.key())
        if base is not None and base.deliveries_per_second and not result.target.startswith("baseline"):
            result.baseline_ratio = round(result.deliveries_per_second / base.deliveries_per_second, 2)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def markdown(results: list[ScenarioResult]) -> str:
    lines = [
        "| target | sockets | rooms | load | stored msg/s | deliveries/s | x baseline | delivered | missing / dup "
        "| ack p50/p99 ms | delivery p50/p95/p99/max ms | errors | drops | handshakes/s | KiB/socket "
        "| server CPU % | client CPU % | other CPU % |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- |",
    ]
    for r in results:
        delivered = f"{r.deliveries / r.expected_deliveries:.1%}" if r.expected_deliveries else "-"
        errors = sum(r.errors.values()) + r.connect_failures
        lines.append(
            f"| {r.target} | {r.sockets:,} | {r.rooms:,} | {r.mode} | {_fmt(r.stored_messages_per_second)} "
            f"| {_fmt(r.deliveries_per_second)} | {_fmt(r.baseline_ratio, 2)} | {delivered} "
            f"| {r.missing} / {r.duplicates} "
            f"| {_fmt(r.ack_ms.get('p50'), 1)} / {_fmt(r.ack_ms.get('p99'), 1)} "
            f"| {_fmt(r.delivery_ms.get('p50'), 1)} / {_fmt(r.delivery_ms.get('p95'), 1)} / "
            f"{_fmt(r.delivery_ms.get('p99'), 1)} / {_fmt(r.delivery_ms.get('max'), 0)} "
            f"| {errors} | {r.disconnects} | {_fmt(r.handshakes_per_second)} "
            f"| {_fmt(r.server_rss_per_socket_kib, 1)} | {_fmt(r.server_cpu_percent)} | {_fmt(r.client_cpu_percent)} "
            f"| {', '.join(f'{name} {cpu:.0f}' for name, cpu in r.infrastructure_cpu_percent.items()) or '-'} |"
        )
    measured = [r for r in results if r.ceilings]
    if measured:
        lines += [
            "",
            "What the database and the broker alone accept, measured when the target's servers started "
            "(batches of 64 straight through the driver; see chat/tools/bench/ceilings.py):",
            "",
            "| target | sockets | rooms | load | stored msg/s | storage alone msg/s | share "
            "| Redis alone publishes/s |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in measured:
            storage = r.ceilings.get("storage")
            share = f"{r.stored_messages_per_second / storage:.1%}" if storage else "-"
            lines.append(
                f"| {r.target} | {r.sockets:,} | {r.rooms:,} | {r.mode} | {_fmt(r.stored_messages_per_second)} "
                f"| {_fmt(storage)} | {share} | {_fmt(r.ceilings.get('broker'))} |"
            )
    restarts = [r for r in results if r.restart is not None]
    if restarts:
        lines += [
            "",
            "Every chat process restarted during the run:",
            "",
            "| target | sockets | dropped | back | processes up in | all back in | back p50 / p99 / max "
            "| still down | gaps "
            "| duplicates | resets | unacked | behind | nothing lost |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in restarts:
            b = r.restart
            assert b is not None
            lines.append(
                f"| {r.target} | {r.sockets:,} | {b.dropped:,} | {b.resumed:,} | {_fmt(b.processes_up_seconds, 1)} s "
                f"| {_fmt(b.all_back_seconds, 1)} s "
                f"| {_fmt(b.resume_ms.get('p50'), 0)} / {_fmt(b.resume_ms.get('p99'), 0)} / "
                f"{_fmt(b.resume_ms.get('max'), 0)} ms | {b.still_down} | {b.gaps} | {b.duplicates} | {b.resets} "
                f"| {b.unacked} | {b.behind} | {'yes' if b.nothing_lost else 'NO'} |"
            )
    return "\n".join(lines)


def write(results: list[ScenarioResult], out_dir: Path, argv: list[str]) -> Path:
    """Write report.json, report.md and the plots; return the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    add_baseline_ratios(results)
    document = {"machine": machine(), "command": argv, "scenarios": [r.to_json() for r in results]}
    (out_dir / "report.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown(results)
    plots = _plot(results, out_dir)
    text = "\n".join(
        [
            "# Bench report",
            "",
            f"Machine: {document['machine']}",
            "",
            f"Command: `{' '.join(argv)}`",
            "",
            table,
            "",
            *[f"![{name}]({name})" for name in plots],
            "",
        ]
    )
    path = out_dir / "report.md"
    path.write_text(text)
    return path


def _plot(results: list[ScenarioResult], out_dir: Path) -> list[str]:
    import matplotlib  # slow import, only when writing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    targets = sorted({r.target for r in results})
    by_target = {
        t: sorted((r for r in results if r.target == t), key=lambda r: (r.room_size, r.rooms)) for t in targets
    }

    if any(len({r.room_size for r in rs}) > 1 for rs in by_target.values()):
        figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
        for target, rows in by_target.items():
            sizes = [r.room_size for r in rows]
            throughput.plot(sizes, [r.deliveries_per_second for r in rows], marker="o", label=target)
            latency.plot(sizes, [r.delivery_ms.get("p50") for r in rows], marker="o", label=f"{target} p50")
            latency.plot(
                sizes, [r.delivery_ms.get("p99") for r in rows], marker="x", linestyle="--", label=f"{target} p99"
            )
        for axis, title, unit in ((throughput, "Deliveries/s", "deliveries/s"), (latency, "Send to delivery", "ms")):
            axis.set_xscale("log")
            axis.set_xlabel("room size (sockets)")
            axis.set_ylabel(unit)
            axis.set_title(title)
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7)
        latency.set_yscale("log")
        figure.tight_layout()
        figure.savefig(out_dir / "scaling.png", dpi=110)
        plt.close(figure)
        written.append("scaling.png")

    with_samples = [r for r in results if r.delivery_samples is not None and len(r.delivery_samples)]
    if with_samples:
        figure, axis = plt.subplots(figsize=(8, 4.5))
        for r in with_samples:
            values = np.sort(np.asarray(r.delivery_samples, dtype=np.float64))
            axis.plot(
                values,
                np.linspace(0, 1, len(values)),
                label=f"{r.target}, {r.sockets} sockets / {r.rooms} rooms, {r.mode}",
            )
        axis.set_xscale("log")
        axis.set_xlabel("send to delivery (ms)")
        axis.set_ylabel("fraction of deliveries")
        axis.set_title("Latency CDF")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6)
        figure.tight_layout()
        figure.savefig(out_dir / "latency-cdf.png", dpi=110)
        plt.close(figure)
        written.append("latency-cdf.png")
    return written
