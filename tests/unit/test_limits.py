"""Abuse limits: the limiter over the `limits` library, and the places that use it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator

import pytest

from chat.broker import memory_limits
from chat.broker.memory_limits import SCHEME as MEMORY_LIMITS
from chat.errors import RateLimited, ValidationError
from chat.models import User
from chat.services import audit
from chat.services.identity.accounts import Accounts
from chat.services.identity.passwords import PasswordHasher
from chat.services.limits import Limiter
from chat.storage import Storage
from chat.wire.actions import Action
from tests.support.clock import FakeClock

PASSWORD = "correct horse"


def limiter(wall_clock: FakeClock, **rules: str) -> Limiter:
    return Limiter(f"{MEMORY_LIMITS}://", {Action(action): spec for action, spec in rules.items()}, clock=wall_clock)


async def test_actions_past_any_rule_are_refused_saying_how_long_to_wait(wall_clock: FakeClock) -> None:
    limits = limiter(wall_clock, send="3 per second;5 per minute")

    for _ in range(3):
        await limits.take(Action.SEND, "alice")
    with pytest.raises(RateLimited) as refused:
        await limits.take(Action.SEND, "alice")
    assert 0.9 < refused.value.retry_after <= 1.1

    wall_clock.advance(refused.value.retry_after)
    await limits.take(Action.SEND, "alice")
    await limits.take(Action.SEND, "alice")
    with pytest.raises(RateLimited) as per_minute:  # 5 per minute is spent now
        await limits.take(Action.SEND, "alice")
    assert 55 < per_minute.value.retry_after <= 61


async def test_each_key_has_its_own_count(wall_clock: FakeClock) -> None:
    limits = limiter(wall_clock, send="1 per minute")

    await limits.take(Action.SEND, "alice")
    await limits.take(Action.SEND, "bob")
    with pytest.raises(RateLimited):
        await limits.take(Action.SEND, "alice")


async def test_allows_and_record_count_without_refusing_and_reset_forgets(wall_clock: FakeClock) -> None:
    limits = limiter(wall_clock, **{"login-failure": "2 per minute"})

    assert await limits.allows(Action.LOGIN_FAILURE, "alice")
    await limits.record(Action.LOGIN_FAILURE, "alice")
    await limits.record(Action.LOGIN_FAILURE, "alice")
    await limits.record(Action.LOGIN_FAILURE, "alice")  # over: counted, not raised
    assert not await limits.allows(Action.LOGIN_FAILURE, "alice")

    await limits.reset(Action.LOGIN_FAILURE, "alice")
    assert await limits.allows(Action.LOGIN_FAILURE, "alice")


async def test_the_limiter_fails_open_when_its_store_is_down(wall_clock: FakeClock) -> None:
    # Nothing listens on port 1: every call to the store fails.
    limits = Limiter("async+redis://127.0.0.1:1/0", {Action.SEND: "1 per minute"}, clock=wall_clock)

    for _ in range(3):
        await limits.take(Action.SEND, "alice")
    assert await limits.allows(Action.SEND, "alice")


def test_malformed_rules_are_refused_when_the_limiter_is_built(wall_clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        limiter(wall_clock, send="lots")


# -- sign-in throttling -----------------------------------------------------------


@pytest.fixture
def guarded(memory_storage: Storage, hasher: PasswordHasher, wall_clock: FakeClock) -> Accounts:
    rules = {"login": "20 per minute", "login-failure": "3 per 15 minutes", "register": "2 per hour"}
    return Accounts(memory_storage, hasher, session_max_age=3600, limiter=limiter(wall_clock, **rules))


async def fail(accounts: Accounts, times: int, name: str = "alice", ip: str = "192.0.2.1") -> None:
    for _ in range(times):
        with pytest.raises(ValidationError):
            await accounts.authenticate(name, "wrong password", ip)


async def test_after_too_many_failures_even_the_right_password_gets_the_same_answer(
    guarded: Accounts, wall_clock: FakeClock
) -> None:
    user = await guarded.register("alice", PASSWORD, PASSWORD, "192.0.2.9")
    await fail(guarded, 3)

    with pytest.raises(ValidationError) as locked:
        await guarded.authenticate("alice", PASSWORD, "198.51.100.7")  # another address does not help
    with pytest.raises(ValidationError) as wrong:
        await guarded.authenticate("nobody-at-all", PASSWORD, "198.51.100.7")
    assert locked.value.message == wrong.value.message == "Wrong username or password."

    wall_clock.advance(15 * 60 + 1)  # the lock is temporary
    assert (await guarded.authenticate("ALICE", PASSWORD, "198.51.100.7")).id == user.id


async def test_a_success_resets_the_failure_count(guarded: Accounts) -> None:
    await guarded.register("alice", PASSWORD, PASSWORD, "192.0.2.9")
    await fail(guarded, 2)
    await guarded.authenticate("alice", PASSWORD, "192.0.2.1")

    await fail(guarded, 2)
    assert (await guarded.authenticate("alice", PASSWORD, "192.0.2.1")).username == "alice"


async def test_sign_in_attempts_from_one_address_are_limited_whatever_the_account(guarded: Accounts) -> None:
    for i in range(20):
        await fail(guarded, 1, name=f"user{i}")

    with pytest.raises(RateLimited):
        await guarded.authenticate("someone-else", "whatever", "192.0.2.1")
    await fail(guarded, 1, name="someone-else", ip="192.0.2.2")  # another address is counted apart


async def test_registrations_from_one_address_are_limited(guarded: Accounts) -> None:
    await guarded.register("alice", PASSWORD, PASSWORD, "192.0.2.1")
    await guarded.register("bob", PASSWORD, PASSWORD, "192.0.2.1")

    with pytest.raises(RateLimited):
        await guarded.register("carol", PASSWORD, PASSWORD, "192.0.2.1")
    assert isinstance(await guarded.register("dave", PASSWORD, PASSWORD, "192.0.2.2"), User)


# -- bcrypt admission --------------------------------------------------------------


@pytest.fixture
def blocked_pool() -> Iterator[tuple[concurrent.futures.ThreadPoolExecutor, threading.Event]]:
    release = threading.Event()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield executor, release
    release.set()
    executor.shutdown(wait=True)


async def test_hashes_past_the_admission_bound_are_refused_at_once_not_queued(
    blocked_pool: tuple[concurrent.futures.ThreadPoolExecutor, threading.Event],
) -> None:
    executor, release = blocked_pool
    hasher = PasswordHasher(rounds=4, executor=executor, max_in_flight=2)
    # The pool's one thread is busy until `release`: two hashes wait for it,
    # holding both admissions.
    executor.submit(release.wait)
    running = [asyncio.ensure_future(hasher.verify(PASSWORD, None)) for _ in range(2)]
    await asyncio.sleep(0)

    with pytest.raises(RateLimited) as refused:
        await asyncio.wait_for(hasher.verify(PASSWORD, None), 0.5)
    assert refused.value.retry_after > 0

    release.set()
    assert await asyncio.gather(*running) == [False, False]
    assert await hasher.verify(PASSWORD, None) is False  # admissions are given back


# -- second review: the lock under a burst, the password form, stale connections, the log


async def test_attempts_sent_together_cannot_get_past_the_lock(
    guarded: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    await guarded.register("alice", PASSWORD, PASSWORD, "192.0.2.9")
    await fail(guarded, 2)  # one failure left before the lock (3 per 15 minutes)
    checked: list[bool] = []
    verify = guarded._hasher.verify

    async def counting(password: str, password_hash: bytes | None) -> bool:
        checked.append(password_hash is not None)  # None: the dummy hash, no account checked
        return await verify(password, password_hash)

    monkeypatch.setattr(guarded._hasher, "verify", counting)

    attempts = [guarded.authenticate("alice", "wrong password", "192.0.2.1") for _ in range(6)]
    attempts.append(guarded.authenticate("alice", PASSWORD, "192.0.2.1"))
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)

    assert checked.count(True) == 1  # one check against the account; the rest found it locked
    assert all(isinstance(outcome, ValidationError) for outcome in outcomes)


async def test_wrong_current_passwords_count_toward_the_same_lock_as_sign_ins(guarded: Accounts) -> None:
    user = await guarded.register("alice", PASSWORD, PASSWORD, "192.0.2.9")
    token = await guarded.start_session(user)
    for _ in range(3):
        with pytest.raises(ValidationError):
            await guarded.change_password(user, "a guess", "new password!", "new password!", token, "192.0.2.1")

    with pytest.raises(ValidationError) as locked:  # the right one, answered as a wrong one
        await guarded.change_password(user, PASSWORD, "new password!", "new password!", token, "192.0.2.1")
    assert locked.value.message == "That is not your current password."
    with pytest.raises(ValidationError):
        await guarded.authenticate("alice", PASSWORD, "192.0.2.1")  # the account is locked for sign-ins too


async def test_password_changes_count_as_sign_in_attempts_of_their_address(
    memory_storage: Storage, hasher: PasswordHasher, wall_clock: FakeClock
) -> None:
    rules = {"login": "2 per minute", "login-failure": "10 per 15 minutes", "register": "10 per minute"}
    accounts = Accounts(memory_storage, hasher, session_max_age=3600, limiter=limiter(wall_clock, **rules))
    user = await accounts.register("alice", PASSWORD, PASSWORD)
    token = await accounts.start_session(user)
    for _ in range(2):
        with pytest.raises(ValidationError):
            await accounts.change_password(user, "a guess", "new password!", "new password!", token, "192.0.2.1")

    with pytest.raises(RateLimited):
        await accounts.change_password(user, "a guess", "new password!", "new password!", token, "192.0.2.1")


async def test_a_store_call_failing_once_is_retried_not_let_through(
    wall_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a Redis restart each pooled connection fails once: failing open
    # then let a send through against a full window.
    limits = limiter(wall_clock, send="1 per minute")
    await limits.take(Action.SEND, "alice")
    hit = limits._strategy.hit
    failures = iter([ConnectionError("Connection closed by server.")])

    async def stale_once(*args: object) -> bool:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await hit(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(limits._strategy, "hit", stale_once)

    with pytest.raises(RateLimited):
        await limits.take(Action.SEND, "alice")


async def test_refusals_are_logged_once_a_minute_per_action_and_key_with_how_many_were_left_out(
    wall_clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(audit, "_throttle", audit.Throttle(clock=wall_clock))
    limits = limiter(wall_clock, typing="10 per hour")
    caplog.set_level("INFO", logger="chat.audit")
    for _ in range(10):
        await limits.take(Action.TYPING, "mallory")

    for _ in range(3000):
        with pytest.raises(RateLimited):
            await limits.take(Action.TYPING, "mallory")
    lines = [record.getMessage() for record in caplog.records if record.name == "chat.audit"]
    assert len(lines) == 1 and lines[0].startswith("limit_hit action=typing key=mallory")

    wall_clock.advance(61)
    with pytest.raises(RateLimited):
        await limits.take(Action.TYPING, "mallory")
    lines = [record.getMessage() for record in caplog.records if record.name == "chat.audit"]
    assert len(lines) == 2 and "repeats=2999" in lines[1]


@pytest.mark.parametrize(
    ("ip", "prefix", "counted_as"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),  # the same /64: one client
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:aaaa::1", 128, "2001:db8:1:2:aaaa::1/128"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),  # IPv4-mapped: the IPv4 client it is
        ("not-an-address", 64, "not-an-address"),
    ],
)
def test_ipv6_clients_are_counted_by_their_network(ip: str, prefix: int, counted_as: str) -> None:
    from chat.services.limits import address_key

    assert address_key(ip, prefix) == counted_as


async def test_registrations_from_one_ipv6_network_share_one_limit(guarded: Accounts) -> None:
    await guarded.register("alice", PASSWORD, PASSWORD, "2001:db8:0:1::a")
    await guarded.register("bob", PASSWORD, PASSWORD, "2001:db8:0:1::b")

    with pytest.raises(RateLimited):
        await guarded.register("carol", PASSWORD, PASSWORD, "2001:db8:0:1:ffff::c")
    assert isinstance(await guarded.register("dave", PASSWORD, PASSWORD, "2001:db8:0:2::a"), User)


async def test_one_process_counts_never_hop_threads_and_expired_ones_are_swept_once_a_second(
    wall_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The library's own memory store swept every key through a worker thread
    # after every count: most of a busy process's loop.
    def no_threads(*_: object, **__: object) -> None:
        raise AssertionError("a count went to a thread")

    monkeypatch.setattr(asyncio, "to_thread", no_threads)
    monkeypatch.setattr(memory_limits, "SWEEP_SECONDS", 0.01)
    limits = limiter(wall_clock, send="3 per second", login="2 per minute")
    storage = limits._storage
    assert isinstance(storage, memory_limits.PacedMemoryStorage)
    for user in ("alice", "bob"):
        for _ in range(3):
            await limits.take(Action.SEND, user)
    await limits.take(Action.LOGIN, "carol")
    assert len(storage.events) == 3

    wall_clock.advance(1.5)  # the sends' window is over, the sign-in's is not
    await asyncio.sleep(0.05)

    assert list(storage.events) == [key for key in storage.events if "carol" in key]
    assert storage.events
    await limits.take(Action.SEND, "alice")  # counted afresh
