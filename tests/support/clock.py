"""A clock the test moves by hand, for anything that takes ``clock=``."""

from __future__ import annotations


class FakeClock:
    """Returns ``now`` until told to ``advance``; stands in for ``time.monotonic`` or ``time.time``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
