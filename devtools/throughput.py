"""How many messages one room can store per second: ``python -m devtools.throughput``.

Measures the storage path alone (what a send waits for before its ack), with
1, 16 and 64 senders writing to one room at once, each sending its next
message as soon as the last is stored. Backends: a SQLite file, and FerretDB on PostgreSQL
(the MongoDB wire-protocol server the tests use; MongoDB itself cannot be
installed here), from one process and from two (two storage clients on the
same database, as two chat processes are). Prints a Markdown table, or JSON
with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chat.errors import Unavailable
from chat.models import NewMessage
from chat.storage import Storage, open_storage

from .services import FerretDB, ferretdb_path


async def senders(stores: Sequence[Storage], count: int, seconds: float) -> float:
    """Stored messages per second with ``count`` senders spread over ``stores``, into one room."""
    first = stores[0]
    user = await first.users.add(f"u_{uuid.uuid4().hex[:8]}", b"hash")
    room = await first.rooms.add(f"r {uuid.uuid4().hex[:8]}", user)
    stored = 0
    deadline = time.monotonic() + seconds

    async def sender(store: Storage, n: int) -> None:
        nonlocal stored
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                await store.messages.add(NewMessage(room.id, user.id, user.username, f"m{n}.{i}", f"{n}.{i}"))
            except Unavailable:
                continue  # waited too long for its turn: a real sender retries the same message
            stored += 1

    started = time.monotonic()
    await asyncio.gather(*(sender(stores[n % len(stores)], n) for n in range(count)))
    return stored / (time.monotonic() - started)


async def measure(urls: dict[str, str], counts: Sequence[int], seconds: float) -> dict[str, dict[int, float]]:
    results: dict[str, dict[int, float]] = {}
    for name, url in urls.items():
        for processes in (1, 2) if url.startswith("mongodb") else (1,):
            stores = [open_storage(url) for _ in range(processes)]
            for store in stores:
                await store.connect()
            try:
                label = f"{name}, {processes} process{'es' if processes > 1 else ''}"
                results[label] = {n: await senders(stores, n, seconds) for n in counts}
            finally:
                for store in stores:
                    await store.close()
    return results


def render(results: dict[str, dict[int, float]]) -> str:
    counts = sorted({n for row in results.values() for n in row})
    lines = [
        "| backend | " + " | ".join(f"{n} sender{'s' if n > 1 else ''}" for n in counts) + " |",
        "| --- |" + " --- |" * len(counts),
    ]
    for label, row in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[n]:.0f}/s" for n in counts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each measurement runs")
    parser.add_argument("--senders", default="1,16,64", help="comma-separated sender counts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.senders.split(",")]
    binary = ferretdb_path()
    with tempfile.TemporaryDirectory(prefix="chat-throughput-") as work:
        urls = {"SQLite": f"sqlite:///{work}/chat.sqlite3"}
        ferret: FerretDB | None = None
        if binary is not None:
            ferret = FerretDB(binary, Path(work) / "ferretdb")
            ferret.start()
            urls["FerretDB"] = ferret.url("throughput")
        try:
            results = asyncio.run(measure(urls, counts, args.seconds))
        finally:
            if ferret is not None:
                ferret.stop()
    out: Any = {label: {str(n): v for n, v in row.items()} for label, row in results.items()}
    print(json.dumps(out, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
