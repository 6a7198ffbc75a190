"""Registration rules, sign-in and server-side sessions, over in-memory SQLite."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from collections.abc import Callable, Collection, Mapping

import pytest

from chat.errors import FormErrors, ValidationError
from chat.events import EventBus, SessionsEnded
from chat.models import Session, User
from chat.services.identity.accounts import Accounts, session_key
from chat.services.identity.passwords import PasswordHasher
from chat.storage import Storage
from tests.support.waiting import eventually

PASSWORD = "correct horse"


async def register(accounts: Accounts, username: str = "alice", password: str = PASSWORD) -> User:
    return await accounts.register(username, password, password)


# -- usernames ---------------------------------------------------------------


@pytest.mark.parametrize("username", ["abc", "a" * 32, "Alice_1", "j.doe", "x-y-z", "007"])
def test_valid_usernames_are_accepted(username: str) -> None:
    assert Accounts.validate_username(username) == username


def test_usernames_are_trimmed() -> None:
    assert Accounts.validate_username("  alice \t") == "alice"


@pytest.mark.parametrize(
    "username",
    [
        "",
        "ab",
        "a" * 33,
        "has space",
        "émile",
        "semi;colon",
        "slash/",
        "at@sign",
        "tab\tname",
        "new\nline",
    ],
)
def test_invalid_usernames_are_rejected_naming_the_field(username: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Accounts.validate_username(username)

    assert caught.value.field == "username"
    assert "3-32" in caught.value.message


# -- passwords ---------------------------------------------------------------


@pytest.mark.parametrize("password", ["73519246", "a" * 72, "é" * 36, "pass word"])
def test_valid_passwords_are_accepted(password: str) -> None:
    Accounts.validate_password(password)


@pytest.mark.parametrize("password", ["12345678", "password", "PassWord1", "iloveyou", "qwertyuiop"])
def test_common_breached_passwords_are_refused_whatever_their_case(password: str) -> None:
    # NIST SP 800-63B 3.1.1.2: refuse values from lists of commonly used or breached passwords.
    with pytest.raises(ValidationError) as caught:
        Accounts.validate_password(password)
    assert caught.value.field == "password" and "most common" in str(caught.value)


def test_a_password_containing_the_username_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Accounts.validate_password("xx-Alice-2026", username="alice")
    assert caught.value.field == "password"
    Accounts.validate_password("xx-Alice-2026", username="bob")


@pytest.mark.parametrize("password", ["", "1234567"])
def test_short_passwords_are_rejected(password: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Accounts.validate_password(password)

    assert caught.value.field == "password"
    assert "8" in caught.value.message


@pytest.mark.parametrize(
    "password",
    ["a" * 73, "é" * 37, "日" * 25, "a" * 71 + "é"],
    ids=[
        "73-ascii",
        "74-bytes-of-2-byte-chars",
        "75-bytes-of-3-byte-chars",
        "71-ascii-plus-one-2-byte-char",
    ],
)
def test_passwords_over_72_bytes_are_rejected_with_a_clear_message(password: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Accounts.validate_password(password)

    assert caught.value.field == "password"
    assert "72 bytes" in caught.value.message
    assert "non-ASCII" in caught.value.message


# -- registration ------------------------------------------------------------


async def test_registering_creates_a_user_with_a_bcrypt_hash(accounts: Accounts, memory_storage: Storage) -> None:
    user = await register(accounts, "Alice")

    assert user.username == "Alice"
    assert user.password_hash.startswith(b"$2b$04$")
    assert PASSWORD.encode() not in user.password_hash
    assert await memory_storage.users.get(user.id) == user


async def test_registering_trims_the_username(accounts: Accounts) -> None:
    assert (await register(accounts, "  bob  ")).username == "bob"


async def test_mismatched_confirmation_is_rejected(accounts: Accounts, memory_storage: Storage) -> None:
    with pytest.raises(ValidationError) as caught:
        await accounts.register("alice", PASSWORD, PASSWORD + "!")

    assert caught.value.field == "password"  # both boxes come back empty: the first is retyped first
    assert await memory_storage.users.get_by_username("alice") is None


async def test_a_taken_username_in_any_case_is_a_validation_error(accounts: Accounts) -> None:
    await register(accounts, "Alice")

    with pytest.raises(ValidationError) as caught:
        await register(accounts, "aLiCe")

    assert caught.value.field == "username"
    assert "taken" in caught.value.message


async def test_losing_a_registration_race_is_a_validation_error(
    accounts: Accounts, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(accounts, "alice")

    async def nobody_yet(username: str) -> None:
        return None  # the early check misses; the unique index must catch it

    monkeypatch.setattr(memory_storage.users, "get_by_username", nobody_yet)

    with pytest.raises(ValidationError) as caught:
        await register(accounts, "ALICE")

    assert caught.value.field == "username"


async def test_an_invalid_registration_stores_nothing(accounts: Accounts, memory_storage: Storage) -> None:
    with pytest.raises(ValidationError):
        await accounts.register("alice", "short", "short")

    assert await memory_storage.users.get_by_username("alice") is None


# -- authentication ----------------------------------------------------------


async def test_the_right_password_authenticates(accounts: Accounts) -> None:
    user = await register(accounts, "Alice")

    assert await accounts.authenticate("alice", PASSWORD) == user
    assert await accounts.authenticate(" ALICE ", PASSWORD) == user


async def test_wrong_password_unknown_user_and_empty_name_give_the_same_message(accounts: Accounts) -> None:
    await register(accounts, "alice")
    messages = []
    for username, password in [("alice", "wrong password"), ("nobody", PASSWORD), ("", PASSWORD), ("   ", PASSWORD)]:
        with pytest.raises(ValidationError) as caught:
            await accounts.authenticate(username, password)
        messages.append((caught.value.message, caught.value.field))

    assert len(set(messages)) == 1
    assert messages[0] == ("Wrong username or password.", None)


async def test_an_overlong_password_does_not_authenticate(accounts: Accounts) -> None:
    await register(accounts, "alice", "a" * 72)

    with pytest.raises(ValidationError):
        await accounts.authenticate("alice", "a" * 72 + "extra")


# -- sessions ----------------------------------------------------------------


async def test_a_started_session_resolves_to_its_user(accounts: Accounts) -> None:
    user = await register(accounts)

    token = await accounts.start_session(user)
    resolved = await accounts.resolve(token)

    assert resolved is not None
    session, resolved_user = resolved
    assert resolved_user == user
    assert session.user_id == user.id
    assert await accounts.is_live(token) is True


async def test_a_session_expires_after_the_max_age(accounts: Accounts) -> None:
    user = await register(accounts)
    before = datetime.datetime.now(datetime.UTC)

    token = await accounts.start_session(user)

    session, _ = await accounts.resolve(token)
    expected = before + datetime.timedelta(seconds=accounts.session_max_age)
    assert abs(session.expires_at - expected) < datetime.timedelta(seconds=5)


async def test_session_tokens_are_long_random_and_distinct(accounts: Accounts) -> None:
    user = await register(accounts)

    tokens = {await accounts.start_session(user) for _ in range(5)}

    assert len(tokens) == 5
    assert all(len(token) >= 43 for token in tokens)  # 32 bytes, base64url


async def test_an_ended_session_no_longer_resolves(accounts: Accounts) -> None:
    user = await register(accounts)
    token = await accounts.start_session(user)
    other = await accounts.start_session(user)

    await accounts.end_session(token)

    assert await accounts.resolve(token) is None
    assert await accounts.is_live(token) is False
    assert await accounts.resolve(other) is not None  # other sessions survive


async def test_an_unknown_token_does_not_resolve(accounts: Accounts) -> None:
    assert await accounts.resolve("made-up-token") is None
    assert await accounts.is_live("made-up-token") is False


async def test_an_expired_session_does_not_resolve(memory_storage: Storage, hasher: PasswordHasher) -> None:
    accounts = Accounts(memory_storage, hasher, session_max_age=-1)
    user = await register(accounts)

    token = await accounts.start_session(user)

    assert await accounts.resolve(token) is None


async def test_the_store_holds_the_sha256_of_the_token_not_the_token(
    accounts: Accounts, memory_storage: Storage
) -> None:
    user = await register(accounts)

    token = await accounts.start_session(user)

    digest = hashlib.sha256(token.encode()).hexdigest()
    assert session_key(token) == digest
    stored = await memory_storage.sessions.get(digest)
    assert stored is not None and stored.user_id == user.id
    assert await memory_storage.sessions.get(token) is None


# -- idle and absolute timeouts ---------------------------------------------------


class Now:
    """A wall clock for Accounts (datetimes), starting now and moved forward by hand."""

    def __init__(self) -> None:
        self.at = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += datetime.timedelta(**delta)


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def timed(memory_storage: Storage, hasher: PasswordHasher, now: Now) -> Accounts:
    """Accounts with the default timeouts (12 h absolute, 30 min idle) on the test's clock."""
    return Accounts(memory_storage, hasher, session_max_age=12 * 3600, idle_timeout=1800, clock=now)


async def test_a_session_without_activity_ends_at_the_idle_timeout(timed: Accounts, now: Now) -> None:
    token = await timed.start_session(await register(timed))

    now.advance(minutes=29)
    assert await timed.is_live(token)  # that was activity
    now.advance(minutes=29, seconds=59)
    assert await timed.is_live(token)
    now.advance(minutes=30, seconds=1)
    assert await timed.resolve(token) is None


async def test_activity_cannot_keep_a_session_past_its_absolute_end(timed: Accounts, now: Now) -> None:
    token = await timed.start_session(await register(timed))

    for _ in range(25):  # active every 28 minutes: 11 h 40 min
        now.advance(minutes=28)
        assert await timed.resolve(token) is not None
    now.advance(minutes=21)  # 12 h 1 min after sign-in, active 21 minutes ago

    assert await timed.resolve(token) is None


async def test_activity_is_written_now_and_then_not_on_every_request_and_behind_it(
    memory_storage: Storage, hasher: PasswordHasher, now: Now, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = Accounts(memory_storage, hasher, session_max_age=3600, idle_timeout=1800, clock=now)
    user = await register(accounts)
    tokens = [await accounts.start_session(user) for _ in range(3)]
    writes: list[list[str]] = []
    original = memory_storage.sessions.touch_many

    async def counting(idle_ends: Mapping[str, datetime.datetime]) -> None:
        await original(idle_ends)
        writes.append(sorted(idle_ends))

    monkeypatch.setattr(memory_storage.sessions, "touch_many", counting)
    for _ in range(20):
        assert await accounts.resolve(tokens[0]) is not None
    assert writes == []  # the idle end was written at sign-in, under a minute ago

    now.advance(minutes=5)
    await asyncio.gather(*(accounts.resolve(token) for token in tokens * 5))
    await eventually(lambda: bool(writes), what="the idle ends written")
    # Once per session, together, after the requests were answered.
    assert writes == [sorted(session_key(token) for token in tokens)]
    stored = await memory_storage.sessions.get(session_key(tokens[1]))
    assert stored is not None and stored.idle_expires_at > now() + datetime.timedelta(minutes=29)


# -- ending sessions ---------------------------------------------------------------


async def ended_keys(events: EventBus) -> list[list[str]]:
    """Every SessionsEnded published from now on, as its sorted keys."""
    announced: list[list[str]] = []

    async def listener(event: SessionsEnded) -> None:
        announced.append(sorted(event.keys))

    events.subscribe(SessionsEnded, listener)
    return announced


async def test_signing_out_announces_the_ended_session(accounts: Accounts, events: EventBus) -> None:
    announced = await ended_keys(events)
    token = await accounts.start_session(await register(accounts))

    await accounts.end_session(token)

    assert announced == [[session_key(token)]]


async def test_signing_out_everywhere_else_keeps_only_this_session(accounts: Accounts, events: EventBus) -> None:
    announced = await ended_keys(events)
    user = await register(accounts)
    here, elsewhere, third = [await accounts.start_session(user) for _ in range(3)]

    assert await accounts.end_other_sessions(user, here) == 2

    assert await accounts.is_live(here) and not await accounts.is_live(elsewhere) and not await accounts.is_live(third)
    assert announced == [sorted([session_key(elsewhere), session_key(third)])]


async def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(accounts: Accounts) -> None:
    user = await register(accounts)
    here, elsewhere = await accounts.start_session(user), await accounts.start_session(user)

    with pytest.raises(ValidationError) as wrong:
        await accounts.change_password(user, "not it", "new password 1", "new password 1", here)
    assert wrong.value.field == "current"
    assert await accounts.is_live(elsewhere)

    assert await accounts.change_password(user, PASSWORD, "new password 1", "new password 1", here) == 1

    assert await accounts.is_live(here) and not await accounts.is_live(elsewhere)
    assert (await accounts.authenticate("alice", "new password 1")).id == user.id
    with pytest.raises(ValidationError):
        await accounts.authenticate("alice", PASSWORD)


async def test_sessions_are_read_every_time_but_their_user_once(
    accounts: Accounts, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(accounts)
    tokens = [await accounts.start_session(user) for _ in range(3)]
    reads: dict[str, list[int]] = {"sessions": [], "users": []}
    read_sessions, read_users = memory_storage.sessions.get_many, memory_storage.users.get_many

    async def counting_sessions(keys: Collection[str]) -> dict[str, Session]:
        reads["sessions"].append(len(keys))
        return await read_sessions(keys)

    async def counting_users(user_ids: Collection[str]) -> dict[str, User]:
        reads["users"].append(len(user_ids))
        return await read_users(user_ids)

    monkeypatch.setattr(memory_storage.sessions, "get_many", counting_sessions)
    monkeypatch.setattr(memory_storage.users, "get_many", counting_users)

    for token in tokens * 5:  # one after the other: each read alone
        assert await accounts.resolve(token) is not None
    await accounts.end_session(tokens[0])

    # The session is what signing out ends, so it is never remembered.
    assert await accounts.resolve(tokens[0]) is None
    assert reads == {"sessions": [1] * 16, "users": [1]}


async def test_sessions_asked_for_together_are_read_together(
    accounts: Accounts, memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A storm of handshakes after a restart: a few reads of many, not many of one.
    user = await register(accounts)
    tokens = [await accounts.start_session(user) for _ in range(40)]
    await accounts.end_session(tokens[-1])
    batches: list[int] = []
    read_sessions = memory_storage.sessions.get_many

    async def counting_sessions(keys: Collection[str]) -> dict[str, Session]:
        batches.append(len(keys))
        return await read_sessions(keys)

    monkeypatch.setattr(memory_storage.sessions, "get_many", counting_sessions)

    resolved = await asyncio.gather(*(accounts.resolve(token) for token in tokens))

    assert [r is not None for r in resolved] == [True] * 39 + [False]
    assert batches == [40]  # all asked before the first read began: one read


async def test_a_password_change_checks_the_stored_hash_not_a_remembered_one(
    accounts: Accounts, memory_storage: Storage
) -> None:
    user = await register(accounts)
    token = await accounts.start_session(user)
    await accounts.resolve(token)  # remembers the user
    # Changed meanwhile through another process (whose cache this one does not share).
    await memory_storage.users.set_password(user.id, (await register(accounts, "bob", "other password")).password_hash)

    with pytest.raises(ValidationError):
        await accounts.change_password(user, PASSWORD, "new password 1", "new password 1", token)
    assert await accounts.change_password(user, "other password", "new password 1", "new password 1", token) == 0


async def test_a_disabled_account_loses_its_sessions_and_cannot_sign_in(accounts: Accounts, events: EventBus) -> None:
    announced = await ended_keys(events)
    user = await register(accounts)
    token = await accounts.start_session(user)

    await accounts.disable(user.id)

    assert await accounts.resolve(token) is None
    assert announced == [[session_key(token)]]
    with pytest.raises(ValidationError) as refused:
        await accounts.authenticate("alice", PASSWORD)
    assert refused.value.message == "Wrong username or password."
    await accounts.enable(user.id)
    assert (await accounts.authenticate("alice", PASSWORD)).id == user.id


async def test_every_failed_sign_in_costs_one_bcrypt_check_whatever_the_reason(
    memory_storage: Storage, hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown user, wrong password and disabled account take the same work, so the same time."""
    accounts = Accounts(memory_storage, hasher, session_max_age=3600)
    await register(accounts, "alice")
    disabled = await register(accounts, "mallory")
    await accounts.disable(disabled.id)
    checks: list[bytes] = []
    original = hasher._run

    async def counting(func: Callable[..., object], *args: bytes) -> object:
        checks.append(args[1][:7])  # the bcrypt version and cost of the hash checked
        return await original(func, *args)

    monkeypatch.setattr(hasher, "_run", counting)
    for name, password in (("nobody", PASSWORD), ("alice", "wrong password"), ("mallory", PASSWORD)):
        with pytest.raises(ValidationError):
            await accounts.authenticate(name, password)

    assert len(checks) == 3 and len(set(checks)) == 1


async def test_registering_says_every_field_that_is_wrong_at_once(accounts: Accounts) -> None:
    with pytest.raises(FormErrors) as caught:
        await accounts.register("x", "short", "short")

    assert list(caught.value.errors) == ["username", "password"]
    assert caught.value.field == "username"  # the first, for whoever reads one
