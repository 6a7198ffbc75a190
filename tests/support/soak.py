"""Judging a soak report: what "nothing lost" means for every soak and stress test."""

from __future__ import annotations

from devtools.soak import SoakReport


def assert_nothing_lost(report: SoakReport) -> None:
    """Every acked message stored; every client holds its room's stored sequence once, in order, without a reload."""
    print(report.render())
    assert report.lost == 0
    assert report.acked_not_stored == 0
    assert report.unacked == 0
    assert report.duplicated == 0
    assert report.out_of_order == 0
    assert report.resets == 0
    assert sum(len(c.acked) for c in report.clients) == sum(c.sent for c in report.clients) > 0
