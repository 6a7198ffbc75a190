"""``python -m chat.admin COMMAND ...``: administer a chat site from a shell.

Every command and subcommand answers ``--help``. Results go to stdout;
an error is one line on stderr (no traceback), with an exit status that
says which kind (see ``EXIT_STATUSES``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import NoReturn

from ..bootstrap import build_services
from ..config import ConfigError, Settings, load_settings
from ..errors import ChatError, Conflict, NotFound, Unavailable
from .commands import (
    WANTS_PASSWORD,
    Command,
    Context,
    Refused,
    read_password,
    room_archive,
    room_delete,
    room_export,
    room_import,
    room_unarchive,
    session_end,
    session_list,
    stats,
    user_admin,
    user_create,
    user_disable,
    user_enable,
    user_reset_password,
)
from .statuses import EXIT_CONFLICT, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE

PROG = "python -m chat.admin"

EXIT_STATUSES = f"""\
exit status:
  {EXIT_OK}  done
  {EXIT_INVALID}  bad usage or input (a name, a password, a file), or a configuration error
  {EXIT_NOT_FOUND}  no such user, room, session or file
  {EXIT_UNAVAILABLE}  the database or the broker cannot be reached
  {EXIT_CONFLICT}  exists already, or clashes with what is there

Settings are the server's: the environment, then .env (CHAT_DATABASE_URL,
CHAT_BROKER_URL, CHAT_COOKIE_SECRETS, ...)."""


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with EXIT_INVALID (argparse's own 2 means "not found" here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Administer a chat site: accounts, sessions, rooms and counts.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def group(name: str, help: str) -> argparse._SubParsersAction[Parser]:
        sub = groups.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXIT_STATUSES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        within: argparse._SubParsersAction[Parser], name: str, run: Command, help: str, details: str = ""
    ) -> Parser:
        sub = within.add_parser(
            name,
            help=help,
            description=f"{help}{chr(10) * 2 + details if details else ''}",
            epilog=EXIT_STATUSES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    def password_option(sub: Parser) -> None:
        sub.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin (the default unless at a terminal, "
            "where it is asked for twice); passwords are never taken as arguments",
        )

    users = group("user", "Accounts: create, make administrator, disable, enable, reset a password.")
    sub = command(users, "create", user_create, "Create an account.")
    sub.add_argument("name", help="the username")
    sub.add_argument("--admin", action="store_true", help="make it a site administrator")
    password_option(sub)
    sub = command(users, "admin", user_admin, "Make or unmake a site administrator.")
    sub.add_argument("name", help="the username")
    grant = sub.add_mutually_exclusive_group(required=True)
    grant.add_argument("--grant", dest="grant", action="store_true", help="make them an administrator")
    grant.add_argument("--revoke", dest="grant", action="store_false", help="make them an administrator no more")
    sub = command(
        users,
        "disable",
        user_disable,
        "Disable an account: it cannot sign in, and its sessions and open sockets end at once.",
    )
    sub.add_argument("name", help="the username")
    sub = command(users, "enable", user_enable, "Enable a disabled account again.")
    sub.add_argument("name", help="the username")
    sub = command(
        users, "reset-password", user_reset_password, "Set a new password for an account and end all its sessions."
    )
    sub.add_argument("name", help="the username")
    password_option(sub)

    sessions = group("session", "Signed-in sessions: list them, end them.")
    sub = command(sessions, "list", session_list, "List live sessions, newest first.")
    sub.add_argument("name", nargs="?", help="only this user's (default: everyone's)")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_argument("--width", type=int, default=12, help=argparse.SUPPRESS)
    sub = command(
        sessions,
        "end",
        session_end,
        "End one session of a user, or all of them; their open sockets close.",
        "A session is named by the start of its id, as `session list` shows it.",
    )
    sub.add_argument("name", help="the username")
    sub.add_argument("session", nargs="?", help="the session id, or enough of its start to name one")
    sub.add_argument("--all", action="store_true", help="end every session of the user")

    rooms = group("room", "Rooms: archive, delete, export and import. ROOM is a room id or its exact name.")
    sub = command(
        rooms,
        "archive",
        room_archive,
        "Archive a room: it stays readable, and nothing new can be posted, edited or deleted in it.",
    )
    sub.add_argument("room", metavar="ROOM", help="the room's id or name")
    sub = command(rooms, "unarchive", room_unarchive, "Let messages be posted in an archived room again.")
    sub.add_argument("room", metavar="ROOM", help="the room's id or name")
    sub = command(
        rooms,
        "delete",
        room_delete,
        "Delete a room with its messages, members, bans and moderation log, for good.",
        "Asks for the room's name at a terminal; elsewhere --yes is required.",
    )
    sub.add_argument("room", metavar="ROOM", help="the room's id or name")
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub = command(
        rooms,
        "export",
        room_export,
        "Write a room's history as JSON Lines.",
        'Line 1 describes the room ({"type": "room", "format": "chat.room", "version": 1, ...});\n'
        "then one line per message in seq order: type, seq, id, user_id, user, body, html,\n"
        "client_id, created_at, edited_at, deleted_at, rev (times ISO 8601 UTC, or null).\n"
        "A deleted message keeps its place with an empty body. Read in pages, never whole.",
    )
    sub.add_argument("room", metavar="ROOM", help="the room's id or name")
    sub.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    sub = command(
        rooms,
        "import",
        room_import,
        "Recreate a room and its messages from an export.",
        "Seqs, times, edits and deletions are kept; authors are matched by username\n"
        "(a name with no account here keeps its exported id). Importing again adds\n"
        "only what is missing; a room of that name holding other messages is a conflict.",
    )
    sub.add_argument("file", metavar="FILE", help="a file written by `room export`")
    sub.add_argument("--into", metavar="NEW_NAME", help="the room's name here (default: the exported name)")
    sub.add_argument("--owner", metavar="NAME", help="who owns a new room (default: the exported creator)")

    sub = command(groups, "stats", stats, "Count users, rooms, messages and live sessions.")
    sub.add_argument("--json", action="store_true", help="as one JSON object")
    return parser


# -- running ------------------------------------------------------------------------


def _status(exc: ChatError) -> int:
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    return EXIT_INVALID


async def execute(run: Command, args: argparse.Namespace, settings: Settings) -> None:
    try:
        services = build_services(settings)
    except ValueError as exc:  # a URL naming no backend we have
        raise Refused(f"configuration error: {exc}", EXIT_INVALID) from None
    try:
        # Once, without the server's retries: an administrator wants an answer now.
        try:
            await services.storage.connect()
        except (Unavailable, OSError) as exc:
            # Not the URL itself: it may hold a password. (OSError: SQLite's directory cannot be made.)
            raise Refused(
                f"cannot reach the database (CHAT_DATABASE_URL): {str(exc)[:300]}", EXIT_UNAVAILABLE
            ) from None
        await services.broker.connect()
        try:
            await services.broker.ping()
            reachable = True
        except Unavailable:
            reachable = False
        await run(Context(services, settings, reachable, sys.stdout), args)
    finally:
        await services.close()


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; the exit status. ``environ`` stands in for the process's environment."""
    args = build_parser().parse_args(argv)
    # Warnings from the services (a failed announcement) are worth seeing; their routine log is not.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(environ)
        if args.run in WANTS_PASSWORD:
            args.password = read_password(args.password_stdin, sys.stdin)
        asyncio.run(execute(args.run, args, settings))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_INVALID)
    except Refused as exc:
        return _fail(str(exc), exc.status)
    except ChatError as exc:
        return _fail(str(exc), _status(exc))
    except LookupError as exc:  # the room went away under an import
        return _fail(str(exc).strip("'\""), EXIT_NOT_FOUND)
    except FileNotFoundError as exc:
        return _fail(f"no such file: {exc.filename}", EXIT_NOT_FOUND)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), EXIT_INVALID)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    return EXIT_OK


def _fail(message: str, status: int) -> int:
    # One line, whatever the message held (a driver's error may span several).
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
