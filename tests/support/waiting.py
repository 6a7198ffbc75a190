"""The one way tests wait for something: poll a condition until it holds or time runs out."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 2.0,
    what: str = "condition",
    interval: float = 0.005,
) -> None:
    """Yield to the event loop until ``predicate()`` holds, or fail after ``timeout`` seconds.

    ``predicate`` may be a coroutine function (e.g. one that asks a server).
    Polling is for conditions another process or task brings about; state the
    test controls itself is advanced with a fake clock instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        await asyncio.sleep(interval)
