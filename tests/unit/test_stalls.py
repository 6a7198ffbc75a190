"""The event-loop watchdog logs a stall with what the loop was running."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from chat.stalls import StallWatch


def a_blocking_call_that_slipped_in() -> None:
    time.sleep(0.4)


async def test_a_blocked_loop_is_logged_once_with_its_stack_and_its_length(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chat.stalls")
    watch = StallWatch(threshold=0.15, interval=0.02)
    watch.start()
    try:
        await asyncio.sleep(0.1)
        a_blocking_call_that_slipped_in()
        await asyncio.sleep(0.1)
    finally:
        watch.stop()

    messages = [r.getMessage() for r in caplog.records]
    # Once for the blocking call, with its stack: a loaded machine (CI) may
    # add a stall of its own around it, which must not be logged as this one.
    blamed = [m for m in messages if "a_blocking_call_that_slipped_in" in m and "stalled" in m]
    assert len(blamed) == 1
    assert watch.stalls >= 1
    assert any("stall over after" in m for m in messages)


async def test_a_busy_but_responsive_loop_is_not_a_stall(caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(threshold=0.15, interval=0.02)
    watch.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.01)
    finally:
        watch.stop()

    assert watch.stalls == 0
