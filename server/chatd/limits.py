"""Rate limiting, sans-IO: the caller passes the time, so tests need no clock."""

from __future__ import annotations


class TokenBucket:
    """Per-client flood control: ``rate`` lines per second, bursts up to ``burst``.

    Each line costs one token. A client out of tokens is not punished: the engine
    stops reading from it until :meth:`wait` has passed, so the excess waits in the
    client's own socket buffers (TCP backpressure) and costs the server nothing.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def take_up_to(self, wanted: int, now: float) -> int:
        """Spend up to ``wanted`` tokens at once; return how many were spent."""
        taken = 0
        while taken < wanted and self.take(now):
            taken += 1
        return taken

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 if one is now)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        return max(0.0, (1.0 - tokens) / self.rate)
