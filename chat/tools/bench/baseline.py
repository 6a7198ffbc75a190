"""A minimal Tornado broadcast server: the bench's yardstick.

``python -m chat.tools.bench.baseline --port N``. It speaks just enough of the
chat protocol for the bench client: a socket at ``/rooms/{id}/ws`` joins the
room; a ``send`` frame is numbered, serialized once, written with
``write_message`` to every socket of the room, and acknowledged. No accounts,
no storage, no broker, no limits: what a chat server costs beyond this is the
price of its guarantees, and every chat figure is also reported as a ratio to
this one measured in the same run, which survives a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import defaultdict
from typing import Any

import tornado.web
import tornado.websocket

COMPACT = (",", ":")
rooms: defaultdict[str, set[BroadcastSocket]] = defaultdict(set)
seqs: defaultdict[str, int] = defaultdict(int)


class BroadcastSocket(tornado.websocket.WebSocketHandler):
    room_id = ""

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        self.room_id = args[0]
        self.set_nodelay(True)
        rooms[self.room_id].add(self)

    def on_message(self, message: str | bytes) -> None:
        frame: dict[str, Any] = json.loads(message)
        seqs[self.room_id] += 1
        wire = {"seq": seqs[self.room_id], "body": frame["body"], "client_id": frame["client_id"]}
        text = json.dumps({"type": "message", "message": wire}, separators=COMPACT)
        for socket in tuple(rooms[self.room_id]):
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                socket.write_message(text)
        self.write_message(
            json.dumps({"type": "ack", "client_id": frame["client_id"], "message": wire}, separators=COMPACT)
        )

    def on_close(self) -> None:
        rooms[self.room_id].discard(self)


class Healthz(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"/rooms/([^/]+)/ws", BroadcastSocket), (r"/healthz", Healthz)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.tools.bench.baseline")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
