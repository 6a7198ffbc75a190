"""The administrator's command line, against the database of each backend.

Each test seeds or checks the database directly (``connected_storage``) and
runs the command with the settings in an environment of its own; the last
tests run it next to a live chat server and watch what happens to open
sockets. The command runs in this process (its ``main``, on a thread of its
own with its own event loop), except where the subject is the process
itself: ``python -m chat.admin`` as a child answers ``--help`` and usage
errors with its exit status, and an unreachable database or a bad
configuration with one line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from chat.admin.__main__ import main as admin_main
from chat.errors import RoomArchived
from chat.models import NewMessage, Revision, Room, User, utcnow
from chat.wire.refusals import Close
from tests.support.client import Browser
from tests.support.server import TEST_SECRET, ServerFactory
from tests.support.services import PROJECT_ROOT, free_port
from tests.support.storage import connected_storage
from tests.support.waiting import eventually

PASSWORD = "correct horse battery"

# Every command and subcommand, for --help.
COMMANDS = [
    [],
    ["user"],
    ["user", "create"],
    ["user", "admin"],
    ["user", "disable"],
    ["user", "enable"],
    ["user", "reset-password"],
    ["session"],
    ["session", "list"],
    ["session", "end"],
    ["room"],
    ["room", "archive"],
    ["room", "unarchive"],
    ["room", "delete"],
    ["room", "export"],
    ["room", "import"],
    ["stats"],
]


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def cli_environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHAT_COOKIE_SECRETS": TEST_SECRET,
        "CHAT_DATABASE_URL": database_url,
        "CHAT_BROKER_URL": "memory://",
        "CHAT_BCRYPT_ROUNDS": "4",
        **extra,
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def run_admin_process(database_url: str, *args: str, stdin: str = "", **env: str) -> Result:
    """``python -m chat.admin`` as a child process: for the tests whose subject is the command line itself."""
    done = subprocess.run(
        [sys.executable, "-m", "chat.admin", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_environment(database_url, **env),
        timeout=60,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _run_in_this_process(database_url: str, args: tuple[str, ...], stdin: str, env: dict[str, str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), replaced_stdin(stdin):
        try:
            status = admin_main(list(args), environ=cli_environment(database_url, **env))
        except SystemExit as exc:  # argparse: --help, usage errors
            status = exc.code if isinstance(exc.code, int) else 1
    return Result(status, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def replaced_stdin(text: str) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def run_admin(database_url: str, *args: str, stdin: str = "", **env: str) -> Result:
    """The command's ``main`` as the child process would run it (its own thread and event loop), without
    the interpreter's start: the same settings, stdin, stdout, stderr and exit status."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(_run_in_this_process, database_url, args, stdin, env).result(timeout=60)


async def run_admin_async(database_url: str, *args: str, **env: str) -> Result:
    """The same, without blocking the event loop the test's sockets run on."""
    return await asyncio.wait_for(asyncio.to_thread(_run_in_this_process, database_url, args, "", env), 60)


def refused(result: Result, status: int, text: str) -> None:
    """The command failed with ``status`` and one line on stderr that says ``text``; no traceback."""
    assert result.status == status, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert text in lines[0], lines[0]


@pytest.fixture(params=["sqlite", "mongodb"])
def database_url(request: pytest.FixtureRequest) -> str:
    # getfixturevalue keeps FerretDB out of the sqlite runs entirely.
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "mongo_url"))


async def make_user(database_url: str, username: str) -> User:
    async with connected_storage(database_url) as storage:
        return await storage.users.add(username, bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)))


async def read_user(database_url: str, username: str) -> User:
    async with connected_storage(database_url) as storage:
        user = await storage.users.get_by_username(username)
    assert user is not None
    return user


async def make_room_with_history(database_url: str, owner: User, name: str, count: int) -> Room:
    """A room with ``count`` messages, the second edited and the third deleted."""
    async with connected_storage(database_url) as storage:
        room = await storage.rooms.add(name, owner)
        for first in range(1, count + 1, 100):
            await storage.messages.add_many(
                [
                    NewMessage(
                        room.id, owner.id, owner.username, f"message {n} ✓", f"c{n}", html=f"<p>message {n} ✓</p>"
                    )
                    for n in range(first, min(first + 100, count + 1))
                ]
            )
        stored, _ = await storage.messages.after(room.id, 0, 3)
        await storage.messages.revise(Revision(room.id, stored[1].id, "edited ✓", utcnow(), "<p>edited ✓</p>"))
        await storage.messages.revise(Revision(room.id, stored[2].id, None, utcnow()))
        found = await storage.rooms.get(room.id)
    assert found is not None
    return found


# -- help and usage ------------------------------------------------------------------


def test_every_command_answers_help_with_the_exit_statuses(sqlite_url: str) -> None:
    for command in COMMANDS:
        result = run_admin(sqlite_url, *command, "--help")

        assert result.status == 0, (command, result)
        assert result.stdout.startswith(f"usage: python -m chat.admin {' '.join(command)}".rstrip()), result.stdout
        assert "exit status:" in result.stdout and "2  no such user, room, session or file" in result.stdout


def test_usage_errors_exit_with_1_and_passwords_are_never_arguments(sqlite_url: str) -> None:
    for args in (
        [],
        ["frobnicate"],
        ["user", "create"],
        ["user", "create", "alice", "s3cret-password"],  # a password as an argument: refused
        ["user", "admin", "alice"],  # neither --grant nor --revoke
        ["user", "admin", "alice", "--grant", "--revoke"],
        ["session", "end", "alice"],  # neither a session nor --all
    ):
        result = run_admin_process(sqlite_url, *args)

        assert result.status == 1, (args, result)
        assert "Traceback" not in result.stderr
        assert "error:" in result.stderr, result.stderr


# -- users ---------------------------------------------------------------------------


async def test_users_are_created_made_administrators_disabled_enabled_and_given_new_passwords(
    database_url: str,
) -> None:
    created = run_admin(database_url, "user", "create", "alice", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.status == 0, created
    assert created.stdout.startswith("created user alice (id ") and "site administrator" in created.stdout
    alice = await read_user(database_url, "alice")
    assert alice.admin and bcrypt.checkpw(PASSWORD.encode(), alice.password_hash)
    # Not at a terminal, stdin gives the password without the flag too.
    assert run_admin(database_url, "user", "create", "bob", stdin=PASSWORD).status == 0
    assert not (await read_user(database_url, "bob")).admin

    refused(
        run_admin(database_url, "user", "create", "ALICE", stdin=PASSWORD), 4, "a user named 'ALICE' exists already"
    )
    refused(run_admin(database_url, "user", "create", "carol", stdin="short\n"), 1, "at least 8 characters")
    refused(run_admin(database_url, "user", "create", "carol"), 1, "no password on stdin")
    refused(run_admin(database_url, "user", "create", "no spaces", stdin=PASSWORD), 1, "Usernames are 3-32")

    revoked = run_admin(database_url, "user", "admin", "alice", "--revoke")
    assert revoked.status == 0 and "alice is no longer a site administrator" in revoked.stdout
    assert not (await read_user(database_url, "alice")).admin
    assert run_admin(database_url, "user", "admin", "Bob", "--grant").status == 0
    assert (await read_user(database_url, "bob")).admin

    disabled = run_admin(database_url, "user", "disable", "bob")
    assert disabled.status == 0 and disabled.stdout.startswith("disabled bob: they cannot sign in; ended 0 sessions")
    assert (await read_user(database_url, "bob")).disabled
    enabled = run_admin(database_url, "user", "enable", "bob")
    assert enabled.status == 0 and "enabled bob" in enabled.stdout
    assert not (await read_user(database_url, "bob")).disabled

    reset = run_admin(database_url, "user", "reset-password", "bob", "--password-stdin", stdin="a whole new one\n")
    assert reset.status == 0 and "set a new password for bob; ended 0 sessions" in reset.stdout
    assert bcrypt.checkpw(b"a whole new one", (await read_user(database_url, "bob")).password_hash)
    refused(run_admin(database_url, "user", "reset-password", "bob", stdin="short"), 1, "at least 8 characters")

    for command in (["disable"], ["enable"], ["reset-password"], ["admin", "--grant"]):
        refused(run_admin(database_url, "user", *command, "nobody", stdin=PASSWORD), 2, "no user named 'nobody'")


# -- sessions ------------------------------------------------------------------------


def session_id(start: str) -> str:
    """A stored session id (a SHA-256 in hex) that starts with ``start``."""
    return start + hashlib.sha256(start.encode()).hexdigest()[len(start) :]


async def test_sessions_are_listed_and_ended_one_by_its_start_or_all_at_once(database_url: str) -> None:
    alice, bob = await make_user(database_url, "alice"), await make_user(database_url, "bob")
    later = utcnow() + datetime.timedelta(hours=1)
    async with connected_storage(database_url) as storage:
        for start, owner in (("abcd1", alice), ("abcd2", alice), ("f00d", alice), ("beef", bob)):
            await storage.sessions.add(session_id(start), owner.id, later)
        await storage.sessions.add(session_id("dead"), alice.id, utcnow() - datetime.timedelta(seconds=1))

    listed = run_admin(database_url, "session", "list", "alice")
    assert listed.status == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["SESSION", "USER", "SIGNED", "IN", "IDLE", "END", "END"]
    assert sorted(row.split()[0] for row in rows) == sorted(session_id(s)[:12] for s in ("abcd1", "abcd2", "f00d"))
    assert all(row.split()[1] == "alice" for row in rows)
    everyone = run_admin(database_url, "session", "list", "--json")
    records = [json.loads(line) for line in everyone.stdout.splitlines()]
    assert sorted(r["user"] for r in records) == ["alice", "alice", "alice", "bob"]
    assert {"session", "user_id", "created_at", "idle_expires_at", "expires_at"} <= set(records[0])
    assert run_admin(database_url, "stats", "--json").stdout.strip().endswith('"live_sessions": 4}')

    refused(run_admin(database_url, "session", "end", "alice", "abcd"), 1, "2 sessions of alice start with 'abcd'")
    refused(run_admin(database_url, "session", "end", "alice", "beef"), 2, "alice has no live session")
    refused(run_admin(database_url, "session", "end", "alice", "ab"), 1, "at least 4 characters")
    refused(run_admin(database_url, "session", "end", "alice", "f00d", "--all"), 1, "either a session id")
    refused(run_admin(database_url, "session", "list", "nobody"), 2, "no user named 'nobody'")

    one = run_admin(database_url, "session", "end", "alice", session_id("abcd2")[:12].upper())
    assert one.status == 0 and one.stdout.startswith("ended 1 session of alice")
    # The embedded broker is the server's own: the command says when sockets close instead.
    assert "memory://" in one.stdout and "CHAT_SESSION_RECHECK_SECONDS" in one.stdout
    every = run_admin(database_url, "session", "end", "alice", "--all")
    assert every.status == 0 and every.stdout.startswith("ended 2 sessions of alice")
    async with connected_storage(database_url) as storage:
        assert [s.user_id for s in await storage.sessions.list_live()] == [bob.id]
    assert run_admin(database_url, "session", "list", "alice").stdout.strip() == "no live sessions of alice"


async def test_disabling_and_resetting_a_password_end_every_session_of_the_account(database_url: str) -> None:
    alice = await make_user(database_url, "alice")
    later = utcnow() + datetime.timedelta(hours=1)
    async with connected_storage(database_url) as storage:
        for start in ("aaaa", "bbbb"):
            await storage.sessions.add(session_id(start), alice.id, later)

    disabled = run_admin(database_url, "user", "disable", "alice")
    assert disabled.status == 0 and "ended 2 sessions" in disabled.stdout
    async with connected_storage(database_url) as storage:
        assert await storage.sessions.list_live(alice.id) == []
        await storage.sessions.add(session_id("cccc"), alice.id, later)
    reset = run_admin(database_url, "user", "reset-password", "alice", stdin=PASSWORD + "!")
    assert reset.status == 0 and "ended 1 session" in reset.stdout
    assert "next session re-check, within 60 s" in reset.stdout  # the default CHAT_SESSION_RECHECK_SECONDS


# -- rooms ---------------------------------------------------------------------------


async def test_a_room_is_archived_by_name_and_unarchived_by_id(database_url: str) -> None:
    alice = await make_user(database_url, "alice")
    room = await make_room_with_history(database_url, alice, "Lobby", 3)

    archived = run_admin(database_url, "room", "archive", "lobby")  # names ignore case, as they are unique so

    assert archived.status == 0, archived
    assert archived.stdout.startswith(f"archived room 'Lobby' (id {room.id}): it stays readable")
    async with connected_storage(database_url) as storage:
        found = await storage.rooms.get(room.id)
        assert found is not None and found.archived
        with pytest.raises(RoomArchived):
            await storage.messages.add(NewMessage(room.id, alice.id, "alice", "late", "late-1"))
        assert len((await storage.messages.after(room.id, 0, 10))[0]) == 3  # still readable
    assert run_admin(database_url, "room", "archive", room.id).status == 0  # again: nothing changes

    unarchived = run_admin(database_url, "room", "unarchive", room.id)
    assert unarchived.status == 0 and "messages can be posted again" in unarchived.stdout
    async with connected_storage(database_url) as storage:
        message, _ = await storage.messages.add(NewMessage(room.id, alice.id, "alice", "back", "back-1"))
        assert message.seq == 4
    refused(run_admin(database_url, "room", "archive", "nowhere"), 2, "no room with the id or name 'nowhere'")


async def test_a_room_is_deleted_only_when_confirmed_and_then_is_gone(database_url: str) -> None:
    alice = await make_user(database_url, "alice")
    room = await make_room_with_history(database_url, alice, "doomed", 3)
    kept = await make_room_with_history(database_url, alice, "kept", 3)

    refused(run_admin(database_url, "room", "delete", "doomed"), 1, "pass --yes to confirm")
    deleted = run_admin(database_url, "room", "delete", room.id, "--yes")

    assert deleted.status == 0 and deleted.stdout.startswith(f"deleted room 'doomed' (id {room.id}) and its 3 messages")
    async with connected_storage(database_url) as storage:
        assert await storage.rooms.get(room.id) is None
        assert await storage.messages.after(room.id, 0, 10) == ([], False)
        assert len((await storage.messages.after(kept.id, 0, 10))[0]) == 3
    refused(run_admin(database_url, "room", "delete", room.id, "--yes"), 2, f"no room with the id or name {room.id!r}")
    counts = json.loads(run_admin(database_url, "stats", "--json").stdout)
    assert counts == {"users": 1, "rooms": 1, "messages": 3, "live_sessions": 0}


async def test_an_export_imports_back_with_seqs_bodies_edits_and_deletions_and_never_twice(
    database_url: str, tmp_path: Path
) -> None:
    alice = await make_user(database_url, "alice")
    # More than one page of the export and import (500 messages each).
    room = await make_room_with_history(database_url, alice, "history", 1203)
    export = tmp_path / "history.jsonl"

    exported = run_admin(database_url, "room", "export", "history", "--output", str(export))

    assert exported.status == 0, exported
    assert exported.stdout.strip() == f"exported room 'history' (id {room.id}): 1203 messages to {export}"
    header, *lines = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert header["type"] == "room" and header["format"] == "chat.room" and header["version"] == 1
    assert (header["name"], header["kind"], header["creator"], header["archived_at"]) == (
        "history",
        "public",
        "alice",
        None,
    )
    assert [line["seq"] for line in lines] == list(range(1, 1204))
    fields = "type seq id user_id user body html client_id created_at edited_at deleted_at rev"
    assert set(lines[0]) == set(fields.split())
    assert lines[1]["body"] == "edited ✓" and lines[1]["edited_at"] and lines[1]["rev"] == 1
    assert lines[2]["body"] == "" and lines[2]["deleted_at"] and lines[2]["rev"] == 2
    # To stdout, the export is alone there; the summary goes to stderr.
    to_stdout = run_admin(database_url, "room", "export", room.id)
    assert [json.loads(line)["type"] for line in to_stdout.stdout.splitlines()[:2]] == ["room", "message"]
    assert to_stdout.stdout.splitlines()[1:] == export.read_text(encoding="utf-8").splitlines()[1:]
    assert "1203 messages" in to_stdout.stderr

    imported = run_admin(database_url, "room", "import", str(export), "--into", "history copy")

    assert imported.status == 0, imported
    assert imported.stdout.startswith("imported into new room 'history copy'")
    assert "1203 new messages, 0 already there" in imported.stdout
    async with connected_storage(database_url) as storage:
        copy = await storage.rooms.get_by_name("history copy")
        assert copy is not None and copy.last_seq == 1203 and copy.creator_id == alice.id
        originals, _ = await storage.messages.after(room.id, 0, 2000)
        copies, _ = await storage.messages.after(copy.id, 0, 2000)
        assert await storage.memberships.get(copy.id, alice.id) is not None  # its owner

    def kept(message: object) -> tuple[object, ...]:
        fields = ("seq", "user_id", "username", "body", "html", "client_id", "created_at", "edited_at")
        return tuple(getattr(message, name) for name in (*fields, "deleted_at", "rev"))

    assert [kept(m) for m in copies] == [kept(m) for m in originals]

    again = run_admin(database_url, "room", "import", str(export), "--into", "History Copy")
    assert again.status == 0 and "into existing room 'history copy'" in again.stdout
    assert "0 new messages, 1203 already there" in again.stdout
    counts = json.loads(run_admin(database_url, "stats", "--json").stdout)
    assert counts == {"users": 1, "rooms": 2, "messages": 2406, "live_sessions": 0}
    # Into a room of that name holding other messages: refused, nothing stored.
    await make_room_with_history(database_url, alice, "other", 3)
    refused(run_admin(database_url, "room", "import", str(export), "--into", "other"), 4, "holds a different message")


async def test_an_archived_room_imports_archived_into_a_fresh_database_with_authors_by_name(
    database_url: str, tmp_path: Path
) -> None:
    alice = await make_user(database_url, "alice")
    room = await make_room_with_history(database_url, alice, "old news", 3)
    assert run_admin(database_url, "room", "archive", room.id).status == 0
    export = tmp_path / "old.jsonl"
    assert run_admin(database_url, "room", "export", "old news", "-o", str(export)).status == 0
    elsewhere = f"sqlite:///{tmp_path}/elsewhere/chat.sqlite3"

    refused(run_admin(elsewhere, "room", "import", str(export)), 2, "no user named 'alice' to own the room")
    refused(run_admin(elsewhere, "room", "import", str(export), "--owner", "zed"), 2, "no user named 'zed'")
    new_alice = await make_user(elsewhere, "alice")
    imported = run_admin(elsewhere, "room", "import", str(export))

    assert imported.status == 0, imported
    assert "3 new messages" in imported.stdout and "the room is archived" in imported.stdout
    async with connected_storage(elsewhere) as storage:
        copy = await storage.rooms.get_by_name("old news")
        assert copy is not None and copy.archived
        messages, _ = await storage.messages.after(copy.id, 0, 10)
    assert {m.user_id for m in messages} == {new_alice.id} != {alice.id}


async def test_bad_export_files_are_refused_with_the_line_and_store_nothing(database_url: str, tmp_path: Path) -> None:
    alice = await make_user(database_url, "alice")
    await make_room_with_history(database_url, alice, "source", 3)
    export = tmp_path / "source.jsonl"
    assert run_admin(database_url, "room", "export", "source", "-o", str(export)).status == 0
    header, *lines = export.read_text(encoding="utf-8").splitlines()
    seq_as_text = lines[0].replace('"seq": 1', '"seq": "1"')
    broken = tmp_path / "broken.jsonl"
    cases = {
        f"{header}\n{lines[0]}\n{{not json\n": "line 3: not JSON",
        f"{header}\n{lines[1]}\n{lines[0]}\n": "line 3: seq 1 does not follow 2",
        f"{header}\n{seq_as_text}\n": "line 2: field 'seq' is missing or not a whole number",
        f"{lines[0]}\n": "line 1: not a room export",
        f"{header}\n{lines[0].replace('message 1 ✓', ' ')}\n": "line 2: a body is 1 to 4000 characters",
        header.replace('"version": 1', '"version": 9') + "\n": "export version 9 is not supported",
        "": "is empty",
    }
    for text, complaint in cases.items():
        broken.write_text(text, encoding="utf-8")
        refused(run_admin(database_url, "room", "import", str(broken), "--into", "target"), 1, complaint)
    refused(run_admin(database_url, "room", "import", str(tmp_path / "missing.jsonl")), 2, "no such file")
    async with connected_storage(database_url) as storage:
        assert await storage.rooms.get_by_name("target") is None

    # HTML in a file is never trusted: every body is rendered again, as if it were sent here.
    crafted = json.loads(lines[0]) | {"body": "**hi** <b>x</b>", "html": "<script>alert(1)</script>"}
    broken.write_text(f"{header}\n{json.dumps(crafted)}\n", encoding="utf-8")
    assert run_admin(database_url, "room", "import", str(broken), "--into", "target").status == 0
    async with connected_storage(database_url) as storage:
        target = await storage.rooms.get_by_name("target")
        assert target is not None
        [imported], _ = await storage.messages.after(target.id, 0, 10)
    assert imported.html == "<p><strong>hi</strong> &lt;b&gt;x&lt;/b&gt;</p>"


# -- configuration and outages ---------------------------------------------------------


def test_an_unreachable_database_and_a_bad_configuration_are_one_line_each(sqlite_url: str) -> None:
    closed = f"mongodb://127.0.0.1:{free_port()}/chat?serverSelectionTimeoutMS=300"
    run = run_admin_process
    refused(run(closed, "stats"), 3, "cannot reach the database (CHAT_DATABASE_URL)")
    refused(run("sqlite:////proc/no-such-dir/chat.sqlite3", "stats"), 3, "cannot reach the database")
    refused(run("postgres://db/chat", "stats"), 1, "configuration error: unsupported CHAT_DATABASE_URL scheme")
    refused(run(sqlite_url, "stats", CHAT_COOKIE_SECRETS=""), 1, "configuration error: CHAT_COOKIE_SECRETS")
    refused(run(sqlite_url, "stats", CHAT_PORT="nope"), 1, "configuration error: CHAT_PORT must be a whole number")


# -- next to a running server --------------------------------------------------------


async def test_with_redis_disabling_closes_the_users_open_sockets_on_the_server_at_once(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser], redis_url: str
) -> None:
    # Re-checks far apart: only the announcement over Redis can close the socket in time.
    server = server_factory(CHAT_BROKER_URL=redis_url, CHAT_SESSION_RECHECK_SECONDS="600")
    browser = open_browser(server.base_url)
    username = await browser.register(f"user_{uuid.uuid4().hex[:8]}")
    room_id = await browser.create_room("live")
    doomed_id = await browser.create_room("doomed")
    sock, doomed = await browser.socket(room_id), await browser.socket(doomed_id)
    await sock.join()
    await doomed.join()

    deleted = await run_admin_async(
        server.database_url, "room", "delete", doomed_id, "--yes", CHAT_BROKER_URL=redis_url
    )
    assert deleted.status == 0, deleted
    assert await doomed.closed(timeout=2) == Close.REMOVED  # its members' sockets in it close

    # Archived: every server forgets its copy, and the page is for reading only.
    quiet_id = await browser.create_room("quiet")
    assert (await browser.get(f"/rooms/{quiet_id}")).code == 200  # cached by the server now
    archived = await run_admin_async(server.database_url, "room", "archive", quiet_id, CHAT_BROKER_URL=redis_url)
    assert archived.status == 0, archived

    async def read_only() -> bool:
        page = (await browser.get(f"/rooms/{quiet_id}")).body.decode()
        return "This room is archived" in page and 'id="composer"' not in page and 'data-archive="true"' in page

    await eventually(read_only, 2, "the archived room's page read-only")

    disabled = await run_admin_async(server.database_url, "user", "disable", username, CHAT_BROKER_URL=redis_url)
    assert disabled.status == 0, disabled
    assert "ended 1 session" in disabled.stdout
    assert "announced over the broker: every server closes their open sockets now" in disabled.stdout

    assert await sock.closed(timeout=2) == Close.SESSION_ENDED
    assert (await browser.get(f"/rooms/{room_id}")).code == 302  # signed out: to the sign-in page
    assert server.uncaught_errors() == []


async def test_with_the_embedded_broker_archiving_refuses_sends_at_once_and_sockets_close_at_the_recheck(
    server_factory: ServerFactory, open_browser: Callable[[str], Browser]
) -> None:
    server = server_factory(CHAT_BROKER_URL="memory://", CHAT_SESSION_RECHECK_SECONDS="1")
    browser = open_browser(server.base_url)
    username = await browser.register(f"user_{uuid.uuid4().hex[:8]}")
    room_id = await browser.create_room("quiet")
    sock = await browser.socket(room_id)
    await sock.join()
    await sock.acked(await sock.send_message("before"))

    archived = await run_admin_async(server.database_url, "room", "archive", room_id)
    assert archived.status == 0, archived

    # The server's copy of the room is not archived yet: storage refuses all the same.
    client_id = await sock.send_message("after")
    [answer] = await sock.answers([client_id])
    assert answer["type"] == "error" and answer["code"] == "forbidden", answer
    assert "archived: it can be read, but nothing new can be posted" in answer["message"]
    assert (await browser.get(f"/rooms/{room_id}")).code == 200  # still readable
    assert (await run_admin_async(server.database_url, "room", "unarchive", room_id)).status == 0
    assert (await sock.acked(await sock.send_message("after unarchiving")))["seq"] == 2  # the same socket

    # The server's settings, as an administrator's shell on that machine has them.
    disabled = await run_admin_async(server.database_url, "user", "disable", username, CHAT_SESSION_RECHECK_SECONDS="1")
    assert disabled.status == 0, disabled
    assert "next session re-check, within 1 s (CHAT_SESSION_RECHECK_SECONDS)" in disabled.stdout
    # As the command said: the server's own re-check finds the session gone.
    assert await sock.closed(timeout=4) == Close.SESSION_ENDED
    assert server.uncaught_errors() == []
