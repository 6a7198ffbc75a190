"""The per-socket token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from chat.errors import RateLimited
from chat.services.ratelimit import TokenBucket
from tests.support.clock import FakeClock


def test_a_full_burst_is_allowed_at_once(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=5, rate=1.0, clock=clock)

    for _ in range(5):
        bucket.take()


def test_one_past_the_burst_is_rate_limited_with_a_positive_wait(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=3, rate=2.0, clock=clock)
    for _ in range(3):
        bucket.take()

    with pytest.raises(RateLimited) as caught:
        bucket.take()

    assert caught.value.retry_after == pytest.approx(0.5)
    assert "retry" in str(caught.value)


def test_waiting_retry_after_is_enough(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=1, rate=4.0, clock=clock)
    bucket.take()
    with pytest.raises(RateLimited) as caught:
        bucket.take()

    clock.advance(caught.value.retry_after)

    bucket.take()


def test_the_bucket_refills_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=10, rate=2.0, clock=clock)
    for _ in range(10):
        bucket.take()

    clock.advance(1.5)  # three tokens back

    for _ in range(3):
        bucket.take()
    with pytest.raises(RateLimited):
        bucket.take()


def test_the_bucket_never_holds_more_than_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=2, rate=100.0, clock=clock)

    clock.advance(3600)

    bucket.take()
    bucket.take()
    with pytest.raises(RateLimited):
        bucket.take()


def test_refused_takes_do_not_spend_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=1, rate=1.0, clock=clock)
    bucket.take()
    for _ in range(5):
        with pytest.raises(RateLimited):
            bucket.take()

    clock.advance(1.0)

    bucket.take()


def test_retry_after_shrinks_as_time_passes(clock: FakeClock) -> None:
    bucket = TokenBucket(burst=1, rate=1.0, clock=clock)
    bucket.take()
    clock.advance(0.25)

    with pytest.raises(RateLimited) as caught:
        bucket.take()

    assert caught.value.retry_after == pytest.approx(0.75)
