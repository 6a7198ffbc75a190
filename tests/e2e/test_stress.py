"""Many senders in one room on two processes (supervisord + nginx + Redis + FerretDB).

32 clients send to one room at once for 20 s, each reading everything and
behaving like the browser (resume with ``since``, re-send unacked messages with
their client_id). Every client must end up with every stored message exactly
once, in ``seq`` order, without a reload, and every acked message must be
stored: with no fault, with a process killed, with Redis restarted, and with
the database down for 5 s.
"""

from __future__ import annotations

from devtools.soak import Deployment, SoakReport, run_soak
from tests.support.soak import assert_nothing_lost

SENDERS = 32
SECONDS = 20.0
RATE = 1.5  # messages per second per sender: 48 a second into one room


async def stress(deployment: Deployment, *faults: str) -> SoakReport:
    report = await run_soak(
        deployment.url,
        clients=SENDERS,
        rooms=1,
        seconds=SECONDS,
        rate=RATE,
        faults=faults,
        fault_every=SECONDS / 2,
        inject=deployment.inject,
    )
    assert_nothing_lost(report)
    assert report.faults == list(faults[:1]) * len(report.faults) and (not faults or report.faults)
    return report


async def test_32_senders_in_one_room_all_get_every_message_once_in_order(deployment: Deployment) -> None:
    report = await stress(deployment)

    assert sum(c.reconnects for c in report.clients) == 0  # nobody was cut off ("ping timed out")


async def test_the_same_with_a_process_killed(deployment: Deployment) -> None:
    await stress(deployment, "kill")


async def test_the_same_with_redis_restarted(deployment: Deployment) -> None:
    await stress(deployment, "redis")


async def test_the_same_with_the_database_down_for_5_seconds(deployment: Deployment) -> None:
    deployment.db_outage_seconds = (5.0, 5.0)
    try:
        await stress(deployment, "db")
    finally:
        deployment.db_outage_seconds = (1.0, 3.0)
