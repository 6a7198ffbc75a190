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

from . import logs, startup
from .app import serve
from .config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat", description="Run one chat server process.")
    parser.add_argument("--port", type=int, help="port to listen on (default: CHAT_PORT or 8888)")
    parser.add_argument("--host", help="address to bind (default: CHAT_HOST or 127.0.0.1)")
    args = parser.parse_args(argv)

    # Whatever stops the process at start is one line on stderr saying what
    # and how to fix it, before any traceback (chat/startup.py).
    try:
        settings = load_settings()
    except ConfigError as exc:
        startup.fail(f"configuration error: {exc}")
        return startup.EXIT_CONFIG
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if args.host is not None:
        settings = replace(settings, host=args.host)
    logs.configure(settings.log_format, logging.INFO)
    try:
        startup.check(settings)
    except ConfigError as exc:
        startup.fail(f"configuration error: {exc}", settings.log_format)
        return startup.EXIT_CONFIG
    except startup.StartupError as exc:
        startup.fail(f"cannot start: {exc}", settings.log_format)
        return exc.exit_code
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner,
    ):
        runner.run(startup.warn_unreachable(settings))
        try:
            runner.run(serve(settings))
        except OSError as exc:
            # Taken between the check and listening (serve() waits for the
            # database first): the same line as the check's.
            if exc.errno not in startup.LISTEN_ERRNOS or exc.filename is not None:
                raise
            failure = startup.listen_error(exc, settings.host, settings.port)
            startup.fail(f"cannot start: {failure}", settings.log_format)
            return failure.exit_code
    return 0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's default


if __name__ == "__main__":
    sys.exit(main())
