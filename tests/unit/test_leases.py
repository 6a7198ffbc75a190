"""Counted places with an expiry (the memory store; Redis runs the same contract in integration)."""

from __future__ import annotations

from chat.broker.leases import MemoryLeases
from tests.support.clock import FakeClock


async def test_a_full_pool_refuses_a_new_holder_until_one_leaves_or_expires() -> None:
    clock = FakeClock()
    leases = MemoryLeases(clock)

    assert await leases.acquire("user:u1", "a", limit=2, ttl=60)
    assert await leases.acquire("user:u1", "b", limit=2, ttl=60)
    assert not await leases.acquire("user:u1", "c", limit=2, ttl=60)
    assert await leases.acquire("user:u1", "a", limit=2, ttl=60)  # a holder re-acquiring is no new place
    assert await leases.acquire("user:u2", "c", limit=2, ttl=60)  # pools are apart

    await leases.release("user:u1", "a")
    assert await leases.acquire("user:u1", "c", limit=2, ttl=60)

    clock.advance(61)  # nobody renewed: every place expired
    assert await leases.count("user:u1") == 0
    assert await leases.acquire("user:u1", "d", limit=1, ttl=60)


async def test_renewing_keeps_places_past_their_first_expiry() -> None:
    clock = FakeClock()
    leases = MemoryLeases(clock)
    await leases.acquire("ip:192.0.2.1", "a", limit=5, ttl=60)

    clock.advance(50)
    await leases.renew([("ip:192.0.2.1", "a")], ttl=60)
    clock.advance(50)

    assert await leases.count("ip:192.0.2.1") == 1


async def test_places_in_many_pools_are_given_back_at_once() -> None:
    leases = MemoryLeases(FakeClock())
    for pool in ("user:u1", "ip:192.0.2.1"):
        await leases.acquire(pool, "a", limit=5, ttl=60)
        await leases.acquire(pool, "b", limit=5, ttl=60)

    await leases.release_many([("user:u1", "a"), ("ip:192.0.2.1", "a")])

    assert await leases.count("user:u1") == await leases.count("ip:192.0.2.1") == 1
