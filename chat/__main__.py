"""``python -m chat [--port N]``: run one chat process.

supervisord starts one of these per port; the port is a command-line option
so every process of a group can share one configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import replace

from .app import serve
from .config import ConfigError, load_settings
from .logs import install_repeat_filter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat", description="Run one chat server process.")
    parser.add_argument("--port", type=int, help="port to listen on (default: CHAT_PORT or 8888)")
    parser.add_argument("--host", help="address to bind (default: CHAT_HOST or 127.0.0.1)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Whatever a client repeats, the log grows by one line per kind per minute.
    install_repeat_filter()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if args.host is not None:
        settings = replace(settings, host=args.host)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner,
    ):
        runner.run(serve(settings))
    return 0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's default


if __name__ == "__main__":
    sys.exit(main())
