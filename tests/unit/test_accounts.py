"""Registration rules, sign-in and server-side sessions, over in-memory SQLite."""

from __future__ import annotations

import datetime
import hashlib

import pytest

from chat.errors import ValidationError
from chat.models import User
from chat.services.accounts import Accounts, session_key
from chat.services.passwords import PasswordHasher
from chat.storage import Storage

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


@pytest.mark.parametrize("password", ["12345678", "a" * 72, "é" * 36, "pass word"])
def test_valid_passwords_are_accepted(password: str) -> None:
    Accounts.validate_password(password)


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

    assert caught.value.field == "confirm"
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
