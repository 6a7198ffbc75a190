"""Many small updates in few commands, of a size every MongoDB-compatible server takes, sent at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne

# FerretDB v1 runs a command's update statements one after the other (about
# 1.7 ms each on PostgreSQL) and holds a PostgreSQL connection for each until
# the command ends, so a command of more statements than its pool holds (50
# by default) waits for good. Small commands, all sent at once, let it use
# every core; MongoDB takes either shape in its stride.
UPDATES_PER_COMMAND = 8


async def update_each(collection: Any, updates: Sequence[UpdateOne]) -> None:
    """Apply independent updates (each to one document), in commands of a few, all at once."""
    await asyncio.gather(
        *(
            collection.bulk_write(list(updates[start : start + UPDATES_PER_COMMAND]), ordered=False)
            for start in range(0, len(updates), UPDATES_PER_COMMAND)
        )
    )
