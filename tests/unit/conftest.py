"""Fixtures for the unit tier: in-process fakes and in-memory SQLite, no network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from types import SimpleNamespace

import pytest

from chat.bootstrap import Services, build_services
from chat.config import Settings
from chat.events import EventBus
from chat.models import Room, User
from chat.services.conversation.messages import Messages
from chat.services.identity.accounts import Accounts
from chat.services.identity.passwords import PasswordHasher
from chat.storage import Storage, open_storage
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Wall-clock seconds the test moves, for presence and the rate limiter.

    The ``limits`` library's memory store reads ``time.time()`` itself, so
    its module's ``time`` is replaced while the test runs.
    """
    fake = FakeClock(start=1_800_000_000.0)
    monkeypatch.setattr("limits.aio.storage.memory.time", SimpleNamespace(time=fake))
    monkeypatch.setattr("chat.broker.memory_limits.time", SimpleNamespace(time=fake))
    return fake


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
def events() -> EventBus:
    """The bus the services of a test publish on (nothing subscribed unless the test does)."""
    return EventBus()


@pytest.fixture
def accounts(memory_storage: Storage, hasher: PasswordHasher, events: EventBus) -> Accounts:
    return Accounts(memory_storage, hasher, session_max_age=3600, events=events)


@pytest.fixture
def messages(memory_storage: Storage) -> Messages:
    return Messages(memory_storage, history_limit=50)


@pytest.fixture
async def user(memory_storage: Storage) -> User:
    return await memory_storage.users.add("alice", b"not-a-real-hash")


@pytest.fixture
async def room(memory_storage: Storage, user: User) -> Room:
    return await memory_storage.rooms.add("lobby", user)


@pytest.fixture
def chat_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for services built in-process; ``indirect`` parametrization overrides fields."""
    fast = Settings(
        cookie_secrets=("unit-test-secret-" + "x" * 32,),
        instance_name="test:1",
        bcrypt_rounds=4,
        limit_sends="1000 per second",
        presence_heartbeat_seconds=3600,
        fanout_gap_retry_seconds=0.01,
    )
    return replace(fast, **getattr(request, "param", {}))


@pytest.fixture
async def services(
    chat_settings: Settings, memory_storage: Storage, clock: FakeClock, wall_clock: FakeClock
) -> AsyncIterator[Services]:
    """Every service, wired by the composition root over in-memory SQLite and the memory broker."""
    built = build_services(chat_settings, storage=memory_storage, clock=clock, wall_clock=wall_clock)
    await built.start()
    try:
        yield built
    finally:
        await built.close()
