"""How long ``--reconnect`` waits before each attempt: 1 s doubling to 30 s, with jitter.

Doubling keeps a client from hammering a server that is down; the cap keeps it from
waiting for ever once the server is back; jitter spreads the clients of a restarted
server so they do not all come back in the same instant. The random source is passed
in, so tests fix it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for successive attempts; :meth:`reset` once a connection is good again."""

    first: float = 1.0
    cap: float = 30.0
    #: Each delay is the nominal one times a factor in [1 - jitter, 1 + jitter], capped.
    jitter: float = 0.2
    #: Uniform in [0, 1): the jitter's source.
    rng: Callable[[], float] = field(default=random.random)
    #: Attempts made since the last reset.
    attempts: int = 0

    def next_delay(self) -> float:
        # The exponent stops growing long before 2**n overflows a float (a day of retries).
        nominal = min(self.cap, self.first * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        factor = 1 - self.jitter + 2 * self.jitter * self.rng()
        return min(self.cap, nominal * factor)

    def reset(self) -> None:
        self.attempts = 0
