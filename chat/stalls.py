"""Find out what blocks the event loop: a watchdog thread that logs long stalls with a stack.

One process serves thousands of sockets from one event loop, so anything that
runs long on it (a slow callback, a CPU-heavy serialization, a blocking call
that slipped in) delays every ping, pong and message of the process. The loop
touches a timestamp every ``interval``; a thread checks it, and when the loop
has been silent for more than ``threshold`` it logs a warning with the stack
the loop's thread is running at that moment, once per stall, then how long
the stall lasted once it ends.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from . import metrics

log = logging.getLogger(__name__)


class StallWatch:
    def __init__(self, threshold: float, interval: float = 0.05) -> None:
        self.threshold = threshold
        self.interval = interval
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._thread: threading.Thread | None = None
        self.stalls = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._loop.call_soon(self._tick)
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _tick(self) -> None:
        self._beat = time.monotonic()
        if not self._stop.is_set() and self._loop is not None:
            self._loop.call_later(self.interval, self._tick)

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stop.wait(self.interval):
            silent = time.monotonic() - self._beat
            if silent > self.threshold and stalled_since is None:
                stalled_since = self._beat
                self.stalls += 1
                metrics.LOOP_STALLS.inc()
                log.warning("event loop stalled for %.2fs so far; it is running:\n%s", silent, self._loop_stack())
            elif silent <= self.threshold and stalled_since is not None:
                log.warning("event loop stall over after %.2fs", self._beat - stalled_since)
                stalled_since = None

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "(no stack)"
        return "".join(traceback.format_stack(frame, limit=12))
