"""A token bucket: ``burst`` sends at once, refilled at ``rate`` per second."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import RateLimited


class TokenBucket:
    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> None:
        """Spend one token or raise :class:`RateLimited` with the wait needed."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            raise RateLimited(retry_after=(1 - self._tokens) / self.rate)
        self._tokens -= 1
