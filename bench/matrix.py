"""What to run: the scenario matrix, its full and quick sizes, and the time estimate.

Kept apart from the code that runs it so the plan (and its duration) can be printed,
tested and argued about before a single server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

#: Scenario names, in the order they run. Numbers are issue 4's.
SCENARIOS: tuple[str, ...] = ("fanout", "flood", "senders", "slow", "idle")
SCENARIO_TITLES: dict[str, str] = {
    "fanout": "1. Paced fan-out",
    "flood": "2. Flood",
    "senders": "3. Many senders",
    "slow": "4. Slow consumer",
    "idle": "5. Idle connections",
}


@dataclass(frozen=True)
class Matrix:
    """Every knob of one bench run. ``full()`` and ``quick()`` are the two presets."""

    targets: tuple[str, ...]
    scenarios: tuple[str, ...] = SCENARIOS
    reps: int = 3
    # 1. paced fan-out (lean driver for every target incl. Redis; Locust at one rate)
    fanout_rooms: tuple[int, ...] = (10, 100, 1000)
    #: offered deliveries/s; message rate = deliveries / (room - 1)
    fanout_deliveries: tuple[int, ...] = (10_000, 30_000, 60_000)
    #: index into fanout_deliveries that Locust also measures (cross-check of the tools)
    fanout_locust_at: int = 1
    #: rooms Locust measures at that rate
    fanout_locust_rooms: tuple[int, ...] = (100, 1000)
    driver_payload: int = 48
    warmup_s: float = 0.3
    window_s: float = 1.5
    timed_members: int = 100
    # 2. flood
    flood_room: int = 1000
    flood_window_s: float = 2.0
    #: most frame bytes per member in flight; 128 KiB left servers idle at N=100 (26 vs
    #: 36 M/s), 512 KiB is as fast as 2 MiB and stays under chatd's 1 MiB --max-sendq
    flood_inflight: int = 512 * 1024
    # 3. many senders (Locust) and 4. slow consumer (lean driver), same traffic
    senders_room: int = 1000
    senders: int = 10
    sender_rate: float = 10.0
    senders_payload: int = 256
    #: Locust's measured window: it starts once every room is full and the warm-up below
    #: has passed (loadtest's start gate), so neither the spawn ramp nor the server's join
    #: storm is in it, and it is this long for every engine (--chat-measure-time)
    locust_window_s: float = 10.0
    #: seconds between the rooms being full and measuring (--chat-warmup): the last join
    #: notices drain and the load generator settles after the handshake storm
    locust_warmup_s: float = 1.0
    locust_timing_sample: float = 0.1
    #: window of each slow-consumer variant (without, then with the stalled member)
    slow_window_s: float = 6.0
    #: wait for late messages: longer than the threaded engine's --send-timeout (5 s)
    #: can stall a broadcast, so late deliveries are measured, not censored
    slow_drain_s: float = 12.0
    #: the stalled member's SO_RCVBUF (the kernel doubles it)
    slow_rcvbuf: int = 4096
    #: the stalled member's MSS: Ethernet-sized, so the server's send buffer stays small
    slow_mss: int = 1460
    # 5. idle connections (lean driver)
    idle_counts: tuple[int, ...] = (1000, 5000, 10000)
    idle_room: int = 100
    quick: bool = False
    notes: list[str] = field(default_factory=list, compare=False)

    def fanout_rate(self, room: int, deliveries: int) -> float:
        """Messages/s (one sender) that offer ``deliveries`` per second to a room."""
        return deliveries / max(1, room - 1)

    def with_targets(self, targets: tuple[str, ...]) -> Matrix:
        return replace(self, targets=targets)


def from_dict(d: dict[str, object]) -> Matrix:
    """Rebuild a Matrix from results.json's "matrix" (JSON turned tuples into lists)."""
    known = {f.name for f in fields(Matrix)} - {"notes"}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    return Matrix(**kw)  # type: ignore[arg-type]


def full(targets: tuple[str, ...]) -> Matrix:
    """The committed report's matrix (about 20-25 minutes on the 2-core machine)."""
    return Matrix(targets=targets)


def quick(targets: tuple[str, ...]) -> Matrix:
    """A smoke run for CI: every code path once, small rooms, one repetition (< 2 min)."""
    return Matrix(
        targets=targets,
        reps=1,
        fanout_rooms=(10, 100),
        fanout_deliveries=(5_000, 20_000),
        fanout_locust_at=0,
        fanout_locust_rooms=(100,),
        warmup_s=0.2,
        window_s=0.8,
        timed_members=50,
        flood_room=100,
        flood_window_s=1.0,
        senders_room=100,
        senders=10,
        sender_rate=5.0,
        locust_window_s=3.0,
        locust_warmup_s=0.5,
        slow_window_s=2.0,
        slow_drain_s=6.0,
        idle_counts=(200, 1000),
        idle_room=100,
        quick=True,
    )


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One unit of work with its own server process; yields one or more runs."""

    kind: str  # "driver" (fan-out sweep + flood), "locust", "slow", "idle"
    target: str
    rep: int
    room: int = 0
    scenario: str = ""  # for locust jobs: fanout, senders or slow
    deliveries: int = 0  # for locust fan-out jobs

    def describe(self) -> str:
        if self.kind == "driver":
            return f"driver fan-out{'+flood' if self.scenario == 'flood' else ''} room={self.room}"
        if self.kind == "idle":
            return "driver idle connections"
        if self.kind == "slow":
            return f"driver slow consumer room={self.room}"
        extra = f" {self.deliveries}/s" if self.scenario == "fanout" else ""
        return f"locust {self.scenario} room={self.room}{extra}"


def jobs(m: Matrix, *, locust_ok: bool) -> list[Job]:
    """The run order: repetitions outermost, so a drift in the machine shows as spread
    between repetitions instead of as a difference between targets."""
    out: list[Job] = []
    chatd = [t for t in m.targets if t != "redis"]
    for rep in range(1, m.reps + 1):
        if "fanout" in m.scenarios or "flood" in m.scenarios:
            rooms = list(m.fanout_rooms) if "fanout" in m.scenarios else []
            if "flood" in m.scenarios and m.flood_room not in rooms:
                rooms.append(m.flood_room)
            for room in rooms:
                for t in m.targets:
                    flood = "flood" in m.scenarios and room == m.flood_room
                    out.append(Job("driver", t, rep, room=room, scenario="flood" if flood else ""))
        if locust_ok and "fanout" in m.scenarios:
            d = m.fanout_deliveries[m.fanout_locust_at]
            for room in m.fanout_locust_rooms:
                for t in chatd:
                    out.append(Job("locust", t, rep, room=room, scenario="fanout", deliveries=d))
        if locust_ok and "senders" in m.scenarios:
            for t in chatd:
                out.append(Job("locust", t, rep, room=m.senders_room, scenario="senders"))
        if "slow" in m.scenarios:
            for t in chatd:
                out.append(Job("slow", t, rep, room=m.senders_room, scenario="slow"))
        if "idle" in m.scenarios:
            for t in chatd:
                out.append(Job("idle", t, rep))
    return out


#: Seconds to start and stop one server process.
SERVER_OVERHEAD_S = 1.0
#: Seconds a Locust run spends outside spawn, join, warm-up and window (interpreter,
#: gevent, drain, shutdown).
LOCUST_OVERHEAD_S = 2.0


def setup_s(target: str, n: int) -> float:
    """Rough seconds to connect and register n clients in one room (join notices are
    n^2/2 lines; the threaded engine sends each with a blocking call)."""
    per = 0.005 if target == "threaded" else 0.0012
    return 0.3 + n * per


def estimate_s(job: Job, m: Matrix) -> float:
    """Predicted wall seconds for one job; the CLI sums these for its ETA."""
    if job.kind == "driver":
        t = SERVER_OVERHEAD_S + setup_s(job.target, job.room)
        if "fanout" in m.scenarios:
            t += len(m.fanout_deliveries) * (m.warmup_s + m.window_s + 0.4)
        if job.scenario == "flood":
            t += m.warmup_s + m.flood_window_s + 0.8
        return t
    if job.kind == "idle":
        per = 0.002 if job.target == "threaded" else 0.0008
        return SERVER_OVERHEAD_S + max(m.idle_counts) * per + 0.6 * len(m.idle_counts)
    if job.kind == "slow":
        # The threaded engine's stall (blocking sends until --send-timeout) outlasts
        # the window; the others deliver late messages within a second or two.
        stall = 10.0 if job.target == "threaded" else 2.0
        return (
            SERVER_OVERHEAD_S
            + setup_s(job.target, job.room)
            + 2 * (m.warmup_s + m.slow_window_s + 0.5)
            + stall
        )
    # Locust: the users spawn and join (setup_s), then warm-up and the measured window.
    return (
        SERVER_OVERHEAD_S
        + LOCUST_OVERHEAD_S
        + setup_s(job.target, job.room)
        + m.locust_warmup_s
        + m.locust_window_s
    )


def estimate_total_s(js: list[Job], m: Matrix) -> float:
    return sum(estimate_s(j, m) for j in js)
