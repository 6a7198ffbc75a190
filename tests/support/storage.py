"""Open a storage backend for a test and always close it."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from chat.storage import Storage, open_storage


@contextlib.asynccontextmanager
async def connected_storage(url: str) -> AsyncIterator[Storage]:
    store = open_storage(url)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()
