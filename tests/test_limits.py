"""The flood-control token bucket, with the time passed in: no clock, no sockets."""

from __future__ import annotations

import pytest

from chatd.limits import TokenBucket


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
