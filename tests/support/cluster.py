"""Helpers for tests against a process group behind nginx."""

from __future__ import annotations

from .client import Browser, RoomSocket
from .waiting import eventually

# nginx picks the process; new connections land elsewhere within a few tries.
LANDING_TIMEOUT = 15.0


async def socket_on(
    browser: Browser,
    room_id: str,
    want: set[str] | None = None,
    avoid: set[str] | None = None,
    since: int | None = None,
) -> tuple[RoomSocket, str]:
    """A joined socket on a process in ``want`` / not in ``avoid`` (nginx picks; retry until it fits)."""
    landed: list[tuple[RoomSocket, str]] = []

    async def fits() -> bool:
        sock = await browser.socket(room_id, since=since)
        hello, _ = await sock.join()
        instance = hello["instance"]
        if (want is None or instance in want) and (avoid is None or instance not in avoid):
            landed.append((sock, instance))
            return True
        sock.close()  # the wrong process: leave it, so nginx's next pick may differ
        return False

    await eventually(fits, LANDING_TIMEOUT, f"landing on a process in {want} / outside {avoid}", interval=0.05)
    return landed[0]
