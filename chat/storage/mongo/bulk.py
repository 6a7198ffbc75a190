"""Many small updates in few commands, in commands of a size every MongoDB-compatible server takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne

# FerretDB v1 holds a PostgreSQL connection for every statement of an update
# command until the command ends, so a command of more statements than its
# pool holds (50 by default) waits for good; MongoDB takes 100,000. Commands
# of this many at most, one after the other.
UPDATES_PER_COMMAND = 32


async def update_each(collection: Any, updates: Sequence[UpdateOne]) -> None:
    """Apply independent updates (each to one document), in as few commands as that allows."""
    for start in range(0, len(updates), UPDATES_PER_COMMAND):
        await collection.bulk_write(list(updates[start : start + UPDATES_PER_COMMAND]), ordered=False)
