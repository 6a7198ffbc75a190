"""Markdown rendered in worker processes, each render on a time budget, so no body can hold the event loop.

markdown-it-py is pure Python: a 4,000-character body of the worst kind takes
tens of milliseconds to render, on whatever thread renders it, and a parser
bug could make one take seconds. :class:`RenderPool` sends bodies to a few
worker processes instead. The loop only writes the body to a pipe and reads
the HTML back; a render over its budget gets its worker killed (a thread
could not be) and the caller a :class:`RenderFailed`, and the next render
starts a fresh worker.

Workers are fresh interpreters (``python -m chat.services.conversation.rendering_pool``),
never forks of the server: the server has threads (bcrypt, aiosqlite), and a
fork would copy their locks in whatever state they were. They start on the
first body that needs one, not before, so a process (or a test) that renders
only plain lines never starts any. A worker reads requests from its stdin
until EOF, so it ends with the server even if the server is killed.

On the pipes, each message is a 4-byte big-endian length and that many bytes
of JSON: a request is ``{"body": ..., "mentions": {name: [id, username]}}``,
a reply the HTML string; a worker that is ready to render says ``true`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ...models import User

# At most this many renders at once, one per worker: a flood of slow bodies
# takes at most these cores, never the loop's.
RENDER_WORKERS = 2
# The worst body found takes about 60 ms (4,000 characters, see
# chat.services.conversation.formatting); one that takes this long is no Markdown meant for people.
RENDER_BUDGET_SECONDS = 1.0
# Importing markdown-it and nh3 takes about 0.2 s; a loaded machine is slower.
WORKER_START_SECONDS = 10.0
# Workers yield the CPU to the server: the loop serves every socket, a
# render only its one message (and a starved one is rendered as plain text).
WORKER_NICENESS = 10
_LENGTH = struct.Struct(">I")
# The directory that holds the chat package: a worker imports the same code
# as the server, wherever the server found it.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class RenderFailed(Exception):
    """A body was not rendered: over budget, no worker free in time, or the worker failed."""


class _Worker:
    """One worker process and its pipes: one render at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, timeout: float) -> _Worker:
        path = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        worker = cls(process)
        try:
            async with asyncio.timeout(timeout):
                ready = await worker._receive()
            if ready is not True:
                raise ValueError(f"it said {ready!r} instead of true")
        except BaseException:
            worker.kill()
            await asyncio.shield(process.wait())
            raise
        return worker

    async def render(self, request: bytes) -> str:
        assert self._process.stdin is not None
        self._process.stdin.write(request)
        await self._process.stdin.drain()
        html = await self._receive()
        if not isinstance(html, str):
            raise RenderFailed(f"a render worker answered {type(html).__name__}, not HTML")
        return html

    async def _receive(self) -> Any:
        assert self._process.stdout is not None
        (length,) = _LENGTH.unpack(await self._process.stdout.readexactly(_LENGTH.size))
        return json.loads(await self._process.stdout.readexactly(length))

    def kill(self) -> None:
        """Kill it now; asyncio reaps it and closes its pipes (:meth:`stopped` waits for that)."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    async def stopped(self) -> None:
        self.kill()
        await self._process.wait()


class RenderPool:
    """Renders bodies in up to ``workers`` processes, each render within ``budget`` seconds."""

    def __init__(
        self,
        workers: int = RENDER_WORKERS,
        budget: float = RENDER_BUDGET_SECONDS,
        start_timeout: float = WORKER_START_SECONDS,
    ) -> None:
        self.budget = budget
        self.start_timeout = start_timeout
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        # Rendering now; killed on close, and not reused if the render is cut short.
        self._busy: set[_Worker] = set()
        # Killed, and being reaped: close() waits for them.
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now, rendering or idle."""
        return [worker.pid for worker in (*self._idle, *self._busy)]

    async def render(self, body: str, mentions: Mapping[str, User]) -> str:
        """``body`` rendered by :func:`~chat.services.conversation.formatting.render` in a worker.

        RenderFailed if it could not be.

        Waiting for a free worker has a budget too: a flood of slow bodies
        delays any other body by a budget at most (then it fails).
        """
        if self._closed:
            raise RenderFailed("the render pool is closed")
        request = _encode({"body": body, "mentions": {name: [u.id, u.username] for name, u in mentions.items()}})
        try:
            async with asyncio.timeout(self.budget):
                await self._slots.acquire()
        except TimeoutError:
            raise RenderFailed(f"no render worker was free within {self.budget:g}s") from None
        try:
            worker = self._idle.pop() if self._idle else await self._start()
            self._busy.add(worker)
            try:
                async with asyncio.timeout(self.budget):
                    html = await worker.render(request)
            except BaseException as exc:
                # Cut short (over budget, cancelled) or broken: its pipe may
                # still carry this reply, so it serves nobody else.
                self._busy.discard(worker)
                self._reap(worker)
                if isinstance(exc, TimeoutError):
                    raise RenderFailed(f"rendering took over {self.budget:g}s; its worker was killed") from None
                if isinstance(exc, asyncio.IncompleteReadError | OSError | ValueError):
                    raise RenderFailed(f"the render worker failed: {exc!r}") from exc
                raise
            self._busy.discard(worker)
            if self._closed:
                await worker.stopped()
            else:
                self._idle.append(worker)
            return html
        finally:
            self._slots.release()

    def _reap(self, worker: _Worker) -> None:
        worker.kill()
        task = asyncio.create_task(worker.stopped(), name="render-worker-reap")
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _start(self) -> _Worker:
        try:
            return await _Worker.start(self.start_timeout)
        except TimeoutError:
            raise RenderFailed(f"a render worker did not start within {self.start_timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise RenderFailed(f"a render worker could not start: {exc!r}") from exc

    async def close(self) -> None:
        """Stop every worker; renders under way fail, later ones are refused (RenderFailed)."""
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(*(worker.stopped() for worker in workers), *self._reaping)


def _encode(message: object) -> bytes:
    # ASCII: a body may hold a lone surrogate (a JSON escape), which UTF-8 cannot encode.
    payload = json.dumps(message).encode("ascii")
    return _LENGTH.pack(len(payload)) + payload


def _read(stream: BinaryIO) -> Any:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None  # EOF: the server closed the pipe or is gone
    (length,) = _LENGTH.unpack(header)
    return json.loads(stream.read(length))


# A mention shows a user's id and name; a worker is told nothing else of them.
_NO_PASSWORD = b""
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """A worker: render each request from ``requests`` until EOF, replying on ``replies``."""
    from .formatting import render  # only workers import it from here: formatting imports this module

    replies.write(_encode(True))
    replies.flush()
    while (request := _read(requests)) is not None:
        mentions = {
            name: User(user_id, username, _NO_PASSWORD, _EPOCH)
            for name, (user_id, username) in request["mentions"].items()
        }
        replies.write(_encode(render(request["body"], mentions)))
        replies.flush()


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    serve(sys.stdin.buffer, out)
