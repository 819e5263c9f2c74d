"""The flood-control token bucket, with the time passed in: no clock, no sockets."""

from __future__ import annotations

import pytest

from chatd.core.limits import TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.take_up_to(8, 0.0) == 5
    assert not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1)
    assert bucket.take_up_to(100, 10.0) == 5  # refills only up to the burst


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=5, now=0.0)


def test_a_charge_may_leave_a_debt_that_delays_the_next_take() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.take(0.0)
    bucket.charge(0.0, 14)  # an expensive command: 10 tokens short
    assert not bucket.take(0.5)  # 5 tokens of the debt repaid, still short
    assert bucket.wait(0.5) == pytest.approx(0.6)
    assert bucket.take(1.1)


def test_a_full_bucket_pays_for_a_cost_above_its_burst() -> None:
    bucket = TokenBucket(rate=100, burst=50, now=0.0)
    assert bucket.take(0.0, 80)  # a 80-byte message with a 50-byte burst goes once...
    assert not bucket.take(0.0, 1)  # ...and leaves a debt
    assert bucket.take(0.31, 1)
