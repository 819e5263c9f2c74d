"""Rate limiting, sans-IO: the caller passes the time, so tests need no clock."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    Flood control spends one token per line (more for expensive commands); the
    private-message budget spends bytes. A client out of tokens is not punished: the
    engine stops reading from it until :meth:`wait` has passed, so the excess waits in the
    client's own socket buffers (TCP backpressure) and costs the server nothing.

    :meth:`charge` may take the bucket below zero: a command whose cost is only known
    once it has run (a ``/who`` of a big room) is paid for by waiting longer before the
    next one.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def retune(self, rate: float, burst: float) -> None:
        """New limits (a reload) for a bucket in use: what it saved is kept, up to the
        new burst, and a debt stays a debt."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = min(self.tokens, self.burst)

    def _refill(self, now: float) -> float:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        self.tokens = tokens
        return tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many (a full bucket pays for any cost)."""
        if self._refill(now) >= min(cost, self.burst):
            self.tokens -= cost
            return True
        return False

    def charge(self, now: float, cost: float) -> None:
        """Spend ``cost`` tokens even if that leaves a debt."""
        self._refill(now)
        self.tokens -= cost

    def take_up_to(self, wanted: int, now: float) -> int:
        """Spend up to ``wanted`` whole tokens at once; return how many were spent."""
        available = int(self._refill(now))
        taken = min(wanted, max(available, 0))
        self.tokens -= taken
        return taken

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        return max(0.0, (min(cost, self.burst) - tokens) / self.rate)
