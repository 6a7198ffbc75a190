"""What each command of ``python -m chat.admin`` does; the command line itself is :mod:`chat.admin.__main__`'s."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from ..bootstrap import Services
from ..config import Settings
from ..errors import ValidationError
from ..models import Message, isoformat, utcnow
from ..services.identity.accounts import USER_CACHE_SECONDS
from ..services.operations.administration import (
    TRANSFER_PAGE,
    Administration,
    ExportedRoom,
    message_record,
    parse_message_record,
    parse_room_record,
    room_record,
)
from ..services.realtime.revocation import MIN_RECHECK_SECONDS
from ..services.rooms.catalog import ROOM_CACHE_SECONDS
from .statuses import EXIT_INVALID


class Refused(Exception):
    """A failure to report in one line with an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- output -------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    """What a command works with: the services, the settings, and whether the broker answered."""

    services: Services
    settings: Settings
    broker_reachable: bool
    out: TextIO

    @property
    def admin(self) -> Administration:
        return self.services.admin

    def say(self, line: str) -> None:
        print(line, file=self.out)

    @property
    def memory_broker(self) -> bool:
        """The in-process broker: it lives in each server's memory, out of this command's reach."""
        return self.settings.broker_url.startswith("memory:")

    def sockets_note(self, ended: int) -> None:
        """Say when the open sockets of the sessions just ended close."""
        if not ended:
            return
        recheck = max(self.settings.session_recheck_seconds, MIN_RECHECK_SECONDS)
        if self.memory_broker:
            # The in-process broker lives in the server's memory: nothing here reaches it.
            self.say(
                "note: CHAT_BROKER_URL is memory:// (one process), which this command cannot reach: "
                f"a running server closes the open sockets of these sessions at its next session re-check, "
                f"within {recheck:g} s (CHAT_SESSION_RECHECK_SECONDS)"
            )
        elif self.broker_reachable:
            self.say("announced over the broker: every server closes their open sockets now")
        else:
            print(
                "warning: the broker did not answer, so servers were not told: their open sockets close "
                f"at the next session re-check, within {recheck:g} s (CHAT_SESSION_RECHECK_SECONDS)",
                file=sys.stderr,
            )


def _time(moment: Any) -> str:
    return isoformat(moment) if moment is not None else "-"


# -- passwords ----------------------------------------------------------------------


def read_password(from_stdin: bool, stdin: TextIO = sys.stdin) -> str:
    """A new password: asked twice at a terminal, else the first line of stdin. Never from argv."""
    if not from_stdin and stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise Refused("the two passwords do not match", EXIT_INVALID)
        return password
    line = stdin.readline()
    if not line:
        raise Refused("no password on stdin (give it as the first line)", EXIT_INVALID)
    return line.rstrip("\r\n")


# -- commands -----------------------------------------------------------------------


async def user_create(ctx: Context, args: argparse.Namespace) -> None:
    user = await ctx.admin.create_user(args.name, args.password, admin=args.admin)
    role = " as a site administrator" if user.admin else ""
    ctx.say(f"created user {user.username} (id {user.id}){role}")


async def user_admin(ctx: Context, args: argparse.Namespace) -> None:
    user = await ctx.admin.set_admin(args.name, args.grant)
    ctx.say(f"{user.username} is {'now' if args.grant else 'no longer'} a site administrator")
    ctx.say(f"note: servers that remember the account see the change within {USER_CACHE_SECONDS:g} s")


async def user_disable(ctx: Context, args: argparse.Namespace) -> None:
    user, ended = await ctx.admin.set_enabled(args.name, False)
    ctx.say(f"disabled {user.username}: they cannot sign in; ended {ended} session{'s' * (ended != 1)}")
    ctx.sockets_note(ended)


async def user_enable(ctx: Context, args: argparse.Namespace) -> None:
    user, _ = await ctx.admin.set_enabled(args.name, True)
    ctx.say(f"enabled {user.username}: they can sign in again")


async def user_reset_password(ctx: Context, args: argparse.Namespace) -> None:
    user, ended = await ctx.admin.reset_password(args.name, args.password)
    ctx.say(f"set a new password for {user.username}; ended {ended} session{'s' * (ended != 1)}")
    ctx.sockets_note(ended)


async def session_list(ctx: Context, args: argparse.Namespace) -> None:
    sessions = await ctx.admin.sessions(args.name)
    if args.json:
        for session, username in sessions:
            record = {
                "session": session.id[: args.width],
                "user": username,
                "user_id": session.user_id,
                "created_at": _time(session.created_at),
                "idle_expires_at": _time(session.idle_expires_at),
                "expires_at": _time(session.expires_at),
            }
            ctx.say(json.dumps(record))
        return
    if not sessions:
        ctx.say("no live sessions" + (f" of {args.name}" if args.name else ""))
        return
    rows = [("SESSION", "USER", "SIGNED IN", "IDLE END", "END")]
    rows += [
        (s.id[: args.width], name, _time(s.created_at), _time(s.idle_expires_at), _time(s.expires_at))
        for s, name in sessions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        ctx.say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def session_end(ctx: Context, args: argparse.Namespace) -> None:
    if args.all == (args.session is not None):
        raise Refused("give either a session id (or its start) or --all", EXIT_INVALID)
    user, ended = await ctx.admin.end_sessions(args.name, None if args.all else args.session)
    ctx.say(f"ended {ended} session{'s' * (ended != 1)} of {user.username}")
    ctx.sockets_note(ended)


async def room_archive(ctx: Context, args: argparse.Namespace) -> None:
    # The database refuses what an archived room is sent, so every server holds to it at once.
    room = await ctx.admin.set_archived(args.room, True)
    ctx.say(f"archived room {room.name!r} (id {room.id}): it stays readable; nothing new can be posted")


async def room_unarchive(ctx: Context, args: argparse.Namespace) -> None:
    room = await ctx.admin.set_archived(args.room, False)
    ctx.say(f"unarchived room {room.name!r} (id {room.id}): messages can be posted again")


async def room_delete(ctx: Context, args: argparse.Namespace) -> None:
    room = await ctx.admin.room(args.room)
    if not args.yes:
        if not sys.stdin.isatty():
            raise Refused(f"deleting room {room.name!r} cannot be undone: pass --yes to confirm", EXIT_INVALID)
        question = f"Delete room {room.name!r} and its {room.last_seq} messages for good? Type its name: "
        answer = await asyncio.to_thread(input, question)
        if answer.strip() != room.name:
            raise Refused("not confirmed; nothing was deleted", EXIT_INVALID)
    room, told = await ctx.admin.delete_room(room.id)
    count = room.last_seq
    ctx.say(f"deleted room {room.name!r} (id {room.id}) and its {count} message{'s' * (count != 1)}")
    if ctx.memory_broker or not told:
        ctx.say(
            "note: servers were not told: sockets open in the room stay open until they next send or reconnect, "
            f"and its page shows for up to {ROOM_CACHE_SECONDS:g} s"
        )


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file written beside its final name and moved there once complete."""
    if path is None or path == "-":
        yield sys.stdout
        return
    final = Path(path)
    partial = final.with_name(f".{final.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as handle:
            yield handle
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


async def room_export(ctx: Context, args: argparse.Namespace) -> None:
    room = await ctx.admin.room(args.room)
    count = 0
    with _output(args.output) as out:
        out.write(json.dumps(room_record(room, utcnow()), ensure_ascii=False) + "\n")
        async for page in ctx.admin.export_pages(room):
            out.writelines(json.dumps(message_record(m), ensure_ascii=False) + "\n" for m in page)
            count += len(page)
    summary = f"exported room {room.name!r} (id {room.id}): {count} message{'s' * (count != 1)}"
    # Written to stdout, the export must stay alone there.
    if args.output in (None, "-"):
        print(summary, file=sys.stderr)
    else:
        ctx.say(f"{summary} to {args.output}")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON Lines file, with their line numbers (blank lines skipped)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise Refused(f"{path} line {number}: not JSON: {exc}", EXIT_INVALID) from None
            if not isinstance(record, dict):
                raise Refused(f"{path} line {number}: expected a JSON object", EXIT_INVALID)
            yield number, record


def _read_export(path: Path, room_id: str) -> tuple[ExportedRoom, Iterator[list[Message]]]:
    """The export's room, and its messages in pages (read as they are consumed)."""
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise Refused(f"{path} is empty", EXIT_INVALID)
    try:
        exported = parse_room_record(first[1])
    except ValidationError as exc:
        raise Refused(f"{path} line {first[0]}: {exc}", EXIT_INVALID) from None

    def pages() -> Iterator[list[Message]]:
        page: list[Message] = []
        last_seq = 0
        for number, record in records:
            try:
                message = parse_message_record(record, room_id)
            except ValidationError as exc:
                raise Refused(f"{path} line {number}: {exc}", EXIT_INVALID) from None
            if message.seq <= last_seq:
                raise Refused(f"{path} line {number}: seq {message.seq} does not follow {last_seq}", EXIT_INVALID)
            last_seq = message.seq
            page.append(message)
            if len(page) == TRANSFER_PAGE:
                yield page
                page = []
        if page:
            yield page

    return exported, pages()


async def room_import(ctx: Context, args: argparse.Namespace) -> None:
    path = Path(args.file)
    # A first pass checks the whole file, so a bad line far down stores nothing.
    exported, pages = _read_export(path, room_id="")
    for _ in pages:
        pass
    target = await ctx.admin.import_target(exported, args.into, args.owner)
    room = target.room
    stored = total = 0
    _, pages = _read_export(path, room_id=room.id)
    for page in pages:
        stored += await ctx.admin.import_page(room, page)
        total += len(page)
    room = await ctx.admin.finish_import(room, exported)
    made = "into new room" if target.created else "into existing room"
    ctx.say(
        f"imported {made} {room.name!r} (id {room.id}): {stored} new message{'s' * (stored != 1)}, "
        f"{total - stored} already there" + ("; the room is archived" if room.archived else "")
    )


async def stats(ctx: Context, args: argparse.Namespace) -> None:
    counts = await ctx.admin.counts()
    if args.json:
        ctx.say(json.dumps(dataclasses.asdict(counts)))
        return
    for name, value in dataclasses.asdict(counts).items():
        ctx.say(f"{name.replace('_', ' '):<14} {value}")


# -- the parser ---------------------------------------------------------------------

Command = Callable[[Context, argparse.Namespace], Awaitable[None]]
# Commands that take a new password (read before anything connects).
WANTS_PASSWORD = {user_create, user_reset_password}
