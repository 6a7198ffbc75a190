"""bcrypt hashing, kept off the event loop."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import bcrypt
import pytest

from chat.services.identity.passwords import MAX_PASSWORD_BYTES, PasswordHasher


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt-test")
    yield pool
    pool.shutdown(wait=True)


async def test_a_hash_verifies_its_password(hasher: PasswordHasher) -> None:
    password_hash = await hasher.hash("correct horse")

    assert await hasher.verify("correct horse", password_hash) is True


async def test_a_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    password_hash = await hasher.hash("correct horse")

    assert await hasher.verify("correct horsE", password_hash) is False
    assert await hasher.verify("", password_hash) is False


async def test_an_unknown_user_never_verifies(hasher: PasswordHasher) -> None:
    assert await hasher.verify("anything at all", None) is False


async def test_hashes_are_bcrypt_2b_at_the_configured_cost(hasher: PasswordHasher) -> None:
    password_hash = await hasher.hash("correct horse")

    assert isinstance(password_hash, bytes)
    assert password_hash.startswith(b"$2b$04$")


async def test_the_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    assert await hasher.hash("correct horse") != await hasher.hash("correct horse")


async def test_non_ascii_passwords_round_trip(hasher: PasswordHasher) -> None:
    password_hash = await hasher.hash("pässwörd-日本")

    assert await hasher.verify("pässwörd-日本", password_hash) is True
    assert await hasher.verify("passwort-日本", password_hash) is False


async def test_a_password_over_72_bytes_fails_verification_without_raising(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("a" * MAX_PASSWORD_BYTES)

    # bcrypt would ignore byte 73 onwards; refusing keeps "a"*72 + "anything" out.
    assert await hasher.verify("a" * (MAX_PASSWORD_BYTES + 1), stored) is False
    assert await hasher.verify("é" * 37, stored) is False  # 74 bytes, 37 characters


async def test_a_password_of_exactly_72_bytes_verifies(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("a" * MAX_PASSWORD_BYTES)

    assert await hasher.verify("a" * MAX_PASSWORD_BYTES, stored) is True


async def test_hashing_runs_in_the_given_executor_off_the_loop_thread(
    executor: concurrent.futures.ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = PasswordHasher(rounds=4, executor=executor)
    threads: list[threading.Thread] = []
    real_hashpw = bcrypt.hashpw

    def recording_hashpw(password: bytes, salt: bytes) -> bytes:
        threads.append(threading.current_thread())
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", recording_hashpw)

    await hasher.hash("correct horse")

    assert len(threads) == 1
    assert threads[0].ident != threading.get_ident()
    assert threads[0].name.startswith("bcrypt-test")


async def test_verifying_runs_off_the_loop_thread(
    executor: concurrent.futures.ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = PasswordHasher(rounds=4, executor=executor)
    stored = await hasher.hash("correct horse")
    idents: list[int] = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        idents.append(threading.get_ident())
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)

    assert await hasher.verify("correct horse", stored) is True
    assert await hasher.verify("whatever", None) is False  # the dummy check, too

    assert len(idents) == 2
    assert threading.get_ident() not in idents
