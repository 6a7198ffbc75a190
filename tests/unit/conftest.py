"""Fixtures for the unit tier: in-process fakes and in-memory SQLite, no network."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from chat.models import Room, User
from chat.services.accounts import Accounts
from chat.services.messages import Messages
from chat.services.passwords import PasswordHasher
from chat.storage import Storage, open_storage
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def memory_storage() -> AsyncIterator[Storage]:
    storage = open_storage("sqlite:///:memory:")
    await storage.connect()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture(scope="session")
def hasher() -> PasswordHasher:
    # Cost 4, bcrypt's minimum: the rules under test do not depend on the cost.
    return PasswordHasher(rounds=4)


@pytest.fixture
def accounts(memory_storage: Storage, hasher: PasswordHasher) -> Accounts:
    return Accounts(memory_storage, hasher, session_max_age=3600)


@pytest.fixture
def messages(memory_storage: Storage) -> Messages:
    return Messages(memory_storage, history_limit=50)


@pytest.fixture
async def user(memory_storage: Storage) -> User:
    return await memory_storage.users.add("alice", b"not-a-real-hash")


@pytest.fixture
async def room(memory_storage: Storage, user: User) -> Room:
    return await memory_storage.rooms.add("lobby", user)
