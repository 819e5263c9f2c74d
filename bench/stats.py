"""Statistics for the report: percentiles, median-and-range, and the validity rule.

Kept free of I/O so the rules that decide what the report claims are unit-tested:
a run is *invalid* when its load generator saturated or when it sent less than 95 % of
what it was asked to send, and invalid runs are listed, never averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: The share of the offered send rate a run must achieve to count (issue 4).
MIN_SEND_RATIO: float = 0.95

#: Load-generator CPU use (share of one core over the window) above which we call it
#: saturated. Locust warns at 90 %; the lean driver uses the same line.
SATURATION_CPU: float = 0.90

#: The percentiles every latency summary carries, as (key, percent).
LATENCY_POINTS: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (the value at rank ceil(p*n)).

    Nearest-rank never invents a value that was not observed, which is what an HDR
    histogram reports too, so driver and Locust figures mean the same thing.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile {pct} out of range")
    # The epsilon keeps float noise (99.9 / 100 * 1000 = 999.0000000000001) from
    # pushing the rank one past the exact value.
    rank = max(1, math.ceil(pct * len(sorted_values) / 100.0 - 1e-9))
    return sorted_values[rank - 1]


def latency_summary_ms(samples_ns: Iterable[int]) -> dict[str, float] | None:
    """p50/p90/p99/p99.9/max and count of latencies given in ns, in milliseconds."""
    ordered = sorted(samples_ns)
    if not ordered:
        return None
    out = {key: percentile(ordered, pct) / 1e6 for key, pct in LATENCY_POINTS}
    out["max"] = ordered[-1] / 1e6
    out["count"] = float(len(ordered))
    return out


@dataclass(frozen=True)
class Spread:
    """Median and range of one metric over the valid runs of a cell."""

    median: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}


def median(values: Sequence[float]) -> float:
    """Plain median (mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def spread(values: Sequence[float]) -> Spread | None:
    """Median and range, or None when there is nothing valid to summarise."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return Spread(median=median(vals), lo=min(vals), hi=max(vals), n=len(vals))


@dataclass
class Verdict:
    """Whether a run counts, and if not, every reason why."""

    valid: bool = True
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.valid = False
        self.reasons.append(reason)


def judge_run(
    *,
    offered_rate: float | None,
    achieved_rate: float | None,
    loadgen_saturated: bool,
    lost: int = 0,
    errors: int = 0,
    server_ok: bool = True,
) -> Verdict:
    """Apply issue 4's validity rule plus the correctness checks we can make.

    offered_rate None means "as fast as possible" (flood): no send-rate rule applies.
    A run that lost or reordered messages, or whose server died, is also invalid --
    a figure from a server that dropped work is not a throughput figure.
    """
    v = Verdict()
    if loadgen_saturated:
        v.fail("load generator saturated")
    if offered_rate:
        if achieved_rate is None:
            v.fail("achieved send rate unknown")
        elif achieved_rate < MIN_SEND_RATIO * offered_rate:
            v.fail(f"sent {achieved_rate:.0f}/s < 95% of offered {offered_rate:.0f}/s")
    if lost:
        v.fail(f"{lost} messages lost or reordered")
    if errors:
        v.fail(f"{errors} connection errors")
    if not server_ok:
        v.fail("server exited or failed to start")
    return v


def is_saturated(cpu_seconds: float, wall_seconds: float) -> bool:
    """True when a single-threaded load generator used >= SATURATION_CPU of a core."""
    return wall_seconds > 0 and cpu_seconds / wall_seconds >= SATURATION_CPU


#: Share of a pinned CPU that may go to work other than our process (loopback softirq,
#: kernel threads) before the run counts as contended. Our own softirq measured up to
#: about 0.35 of the server's CPU under flood.
MAX_FOREIGN_BUSY: float = 0.5


def foreign_busy(cpu_busy: float | None, own_util: float | None) -> float | None:
    """The part of a CPU's busy share that our process on it did not account for."""
    if cpu_busy is None or own_util is None:
        return None
    return max(0.0, cpu_busy - own_util)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


#: What ends a sweep on the server's side (see Knee.limit).
SERVER_LIMITS = frozenset({"p99", "loss", "backpressure"})


@dataclass(frozen=True)
class Knee:
    """Where a saturation sweep's last passing step was, and what ended it.

    ``rate`` is the highest offered rate (messages/s) whose step passed -- valid, p99 at
    most the knee's bound, nothing lost -- with every lower step passing too; None when
    the first step already failed. ``limit`` says what the next step ran into: "p99",
    "loss" (messages lost, or clients dropped by the server) or "backpressure" (the
    server stopped reading the senders, so they fell behind the schedule) are the
    server's limits; "load generator", "contended", "invalid" or "top of sweep" are the
    measurement's, and then the knee is only a lower bound.
    """

    rate: float | None
    limit: str
    detail: str = ""

    @property
    def lower_bound(self) -> bool:
        return self.limit not in SERVER_LIMITS


def knee(steps: Sequence[dict[str, object]], p99_bound_ms: float) -> Knee:
    """The knee of one sweep from its step records, in rate order.

    A step record has ``params.offered``, ``valid``, ``reasons`` and ``metrics`` with
    ``latency_p99_ms`` and ``lost``/``reordered``. The walk stops at the first step that
    does not pass; an invalid step stops it too (its figures cannot be judged), with the
    reason kept, so a knee never skips over a step nobody could measure.
    """
    best: float | None = None
    for st in sorted(steps, key=lambda r: float(r["params"]["offered"])):  # type: ignore[index]
        rate = float(st["params"]["offered"])  # type: ignore[index]
        met: dict[str, float] = st.get("metrics") or {}  # type: ignore[assignment]
        lost = int(met.get("lost") or 0) + int(met.get("reordered") or 0)
        reasons = [str(x) for x in st.get("reasons") or []]  # type: ignore[union-attr]
        if lost:
            return Knee(best, "loss", f"{lost} lost or reordered at {rate:g}/s")
        if not st.get("valid"):
            why = "; ".join(reasons)
            if "load generator saturated" in why:
                limit = "load generator"
            elif "machine contended" in why:
                limit = "contended"
            elif "connection errors" in why:
                limit = "loss"
            elif "% of offered" in why:
                limit = "backpressure"
            else:
                limit = "invalid"
            return Knee(best, limit, f"at {rate:g}/s: {why}")
        p99 = met.get("latency_p99_ms")
        if p99 is None:
            return Knee(best, "invalid", f"no latency at {rate:g}/s")
        if p99 > p99_bound_ms:
            return Knee(best, "p99", f"p99 {p99:.0f} ms at {rate:g}/s")
        best = rate
    return Knee(best, "top of sweep", "every step passed")
