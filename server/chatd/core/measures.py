"""Histograms a server keeps beside its counters: plain numbers, updated on the loop.

``/stats`` counters are ints in a :class:`collections.Counter`; these are the two
distributions ``GET /metrics`` adds (:mod:`chatd.web.metrics` renders both in the
Prometheus text format):

* **delivery**: for each chat message delivered on this node (a room or private message;
  the lines one read brought go as one message), the seconds from the moment the hub
  accepted it (on this node or, in a cluster, on another) to its bytes being queued for
  the local recipients. On one node this is the hub-to-router path; across nodes it
  includes the trip through Redis.
* **loop turn**: the reactor's busy time per turn, from the return of ``select`` to the
  end of the flush before the next one. The other engines have no turn and leave it
  empty.

An observation is a ``bisect`` and two additions: no lock (everything runs on the loop;
the threaded engine's sessions run under the service lock), no allocation.
"""

from __future__ import annotations

from bisect import bisect_left

#: Bucket upper bounds in seconds: 10 µs to 10 s, three per decade.
BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Counts per bucket (not cumulative: the renderer sums), their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        #: One count per bound, and one more for values above the last (``+Inf``).
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            total += count
            out.append((repr(bound), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


class Measures:
    """The histograms of one server (the service owns it; engines and the router fill it)."""

    __slots__ = ("delivery", "loop_turn")

    def __init__(self) -> None:
        self.delivery = Histogram()
        self.loop_turn = Histogram()
