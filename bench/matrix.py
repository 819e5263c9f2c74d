"""What to run: the scenario matrix, its full and quick sizes, and the time estimate.

Kept apart from the code that runs it so the plan (and its duration) can be printed,
tested and argued about before a single server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from bench.servers import target_for

#: Scenario names. Numbers 1-5 are issue 4's; the saturation sweep (issue 10) is 0,
#: the headline: where the designs differ; 7 is issue 20's join and quit storm (6 is the
#: Redis anchor, which runs inside 0-2).
SCENARIOS: tuple[str, ...] = (
    "saturation",
    "fanout",
    "flood",
    "senders",
    "slow",
    "idle",
    "storm",
)
SCENARIO_TITLES: dict[str, str] = {
    "saturation": "0. Saturation: the knee",
    "fanout": "1. Paced fan-out",
    "flood": "2. Flood",
    "senders": "3. Many senders",
    "slow": "4. Slow consumer",
    "idle": "5. Idle connections",
    "storm": "7. Join and quit storm",
}

#: Which scenarios each wire dialect takes part in. Flood, slow consumer and idle
#: connections are chatd line-protocol scenarios (plus Redis for flood, and chatd's IRC
#: listener for idle connections, see takes_part); the IRC targets
#: (chatd's IRC listener, ngircd, InspIRCd) join the saturation sweep and the fan-out,
#: and Locust's many-senders run once loadtest speaks IRC (the fan-out's Locust
#: cross-check stays with the line protocol: a join storm of 1,000 costs ngircd a
#: minute per run); Redis has no Locust user.
DIALECT_SCENARIOS: dict[str, frozenset[str]] = {
    "line": frozenset(SCENARIOS),
    "resp": frozenset({"saturation", "fanout", "flood"}),
    "irc": frozenset({"saturation", "fanout", "senders"}),
}


@dataclass(frozen=True)
class Matrix:
    """Every knob of one bench run. ``full()`` and ``quick()`` are the two presets."""

    targets: tuple[str, ...]
    scenarios: tuple[str, ...] = SCENARIOS
    #: repetitions of the lean driver's fan-out and flood (scenarios 1, 2); the saturation
    #: grid runs saturation_grid_reps times, its headline configuration headline_reps
    #: times, and the Locust runs, slow consumer and idle connections aux_reps times
    reps: int = 2
    aux_reps: int = 1
    # 0. saturation: S senders into a room, open loop, total rate doubling per step
    saturation_rooms: tuple[int, ...] = (100, 1000)
    saturation_senders: tuple[int, ...] = (1, 10, 100)
    #: first step's total rate (messages/s); each next step doubles it
    saturation_start: float = 50.0
    #: no step above this rate (a bound on the sweep's length)
    saturation_max: float = 51_200.0
    saturation_warmup_s: float = 0.2
    saturation_window_s: float = 1.0
    saturation_drain_s: float = 2.0
    saturation_payload: int = 48
    #: the knee: the highest rate with p99 <= this and nothing lost
    knee_p99_ms: float = 100.0
    #: the sweep stops after a step whose p99 passes this
    stop_p99_ms: float = 1000.0
    #: stamped lines per second the driver parses at most (fewer timed receivers at
    #: higher rates; 5 at least)
    saturation_parse_budget: float = 40_000.0
    #: the configuration the headline is about, and how many repetitions it gets; the
    #: rest of the grid runs in the first repetition only
    headline_room: int = 1000
    headline_senders: int = 10
    headline_reps: int = 3
    saturation_grid_reps: int = 1
    #: count send syscalls (perf) in one extra step at each sweep's knee, and in the
    #: headline configuration also at this common rate (messages/s), in repetition 1
    count_sends: bool = True
    count_rate: float = 100.0
    # 1. paced fan-out (lean driver for every target incl. Redis; Locust at one rate)
    fanout_rooms: tuple[int, ...] = (100, 1000)
    #: offered deliveries/s; message rate = deliveries / (room - 1)
    fanout_deliveries: tuple[int, ...] = (10_000, 30_000, 60_000)
    #: index into fanout_deliveries that Locust also measures (cross-check of the tools)
    fanout_locust_at: int = 1
    #: rooms Locust measures at that rate
    fanout_locust_rooms: tuple[int, ...] = (1000,)
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
    # 7. join and quit storm (bench/storm.py; chatd with its default options)
    storm_connections: int = 4000
    storm_probes: int = 10
    storm_probe_interval_s: float = 0.02
    storm_idle_s: float = 1.0
    #: the longest each storm (join, then quit) may take
    storm_wait_s: float = 120.0
    quick: bool = False
    notes: list[str] = field(default_factory=list, compare=False)

    def fanout_rate(self, room: int, deliveries: int) -> float:
        """Messages/s (one sender) that offer ``deliveries`` per second to a room."""
        return deliveries / max(1, room - 1)

    def saturation_rates(self) -> list[float]:
        """The sweep's steps: saturation_start doubling up to saturation_max."""
        out, r = [], self.saturation_start
        while r <= self.saturation_max:
            out.append(r)
            r *= 2
        return out

    def sweeps_for(self, room: int, rep: int) -> tuple[int, ...]:
        """Sender counts swept in ``room`` in repetition ``rep`` (may be none)."""
        if "saturation" not in self.scenarios or room not in self.saturation_rooms:
            return ()
        if rep <= self.saturation_grid_reps:
            return self.saturation_senders
        if rep > self.headline_reps:
            return ()
        if room == self.headline_room and self.headline_senders in self.saturation_senders:
            return (self.headline_senders,)
        return ()

    @property
    def total_reps(self) -> int:
        """Repetitions the job list spans (the headline sweep may have more than reps)."""
        sweeping = "saturation" in self.scenarios
        return max(self.reps, self.aux_reps, self.headline_reps if sweeping else 0, 1)

    def with_targets(self, targets: tuple[str, ...]) -> Matrix:
        return replace(self, targets=targets)


def from_dict(d: dict[str, object]) -> Matrix:
    """Rebuild a Matrix from results.json's "matrix" (JSON turned tuples into lists)."""
    known = {f.name for f in fields(Matrix)} - {"notes"}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    return Matrix(**kw)  # type: ignore[arg-type]


def full(targets: tuple[str, ...]) -> Matrix:
    """The committed report's matrix (about 35 minutes on the 2-core machine)."""
    return Matrix(targets=targets)


def quick(targets: tuple[str, ...]) -> Matrix:
    """A smoke run for CI: every code path once, small rooms, one repetition (< 2 min)."""
    return Matrix(
        targets=targets,
        reps=1,
        headline_reps=1,
        saturation_rooms=(100,),
        saturation_senders=(10,),
        saturation_start=50.0,
        saturation_max=1600.0,
        saturation_window_s=0.5,
        saturation_warmup_s=0.15,
        saturation_drain_s=1.0,
        stop_p99_ms=300.0,
        headline_room=100,
        headline_senders=10,
        count_rate=100.0,
        fanout_rooms=(100,),
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
        storm_connections=200,
        storm_idle_s=0.5,
        storm_wait_s=30.0,
        quick=True,
    )


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One unit of work with its own server process; yields one or more runs."""

    #: "driver" (fan-out, saturation sweeps, flood), "locust", "slow", "idle", "storm"
    kind: str
    target: str
    rep: int
    #: the room's size (a storm job: its connections, all in the default room)
    room: int = 0
    scenario: str = ""  # for locust jobs: fanout or senders; for driver jobs: "flood" or ""
    deliveries: int = 0  # for locust fan-out jobs
    #: driver jobs: run the fan-out rates in this room
    fanout: bool = False
    #: driver jobs: sender counts of the saturation sweeps in this room
    sweeps: tuple[int, ...] = ()

    @property
    def flood(self) -> bool:
        return self.kind == "driver" and self.scenario == "flood"

    def describe(self) -> str:
        if self.kind == "driver":
            parts = []
            if self.fanout:
                parts.append("fan-out")
            if self.sweeps:
                parts.append(f"saturation ({', '.join(map(str, self.sweeps))} senders)")
            if self.flood:
                parts.append("flood")
            return f"driver room={self.room}: {', '.join(parts)}"
        if self.kind == "idle":
            return "driver idle connections"
        if self.kind == "slow":
            return f"driver slow consumer room={self.room}"
        if self.kind == "storm":
            return f"driver join and quit storm of {self.room} connections"
        extra = f" {self.deliveries}/s" if self.scenario == "fanout" else ""
        return f"locust {self.scenario} room={self.room}{extra}"


def takes_part(target: str, scenario: str, *, locust_irc: bool = True) -> bool:
    """Does ``target`` run in ``scenario``? (by its wire dialect; see DIALECT_SCENARIOS)

    ``scenario`` "locust-fanout" is the fan-out's Locust cross-check.
    """
    dialect = target_for(target).dialect
    if scenario == "storm":
        # issue 20: the reactor is judged, threaded and asyncio beside it (line dialect)
        return target in STORM_TARGETS
    if not target_for(target).history:
        # History off is there to be compared with the reactor on its figures of cost:
        # the knee (and CPU per delivery on the way to it) and memory per connection.
        return scenario in ("saturation", "idle")
    if dialect == "irc" and scenario == "senders":
        return locust_irc and target in LOCUST_IRC_TARGETS
    if dialect == "irc" and scenario == "idle":
        # chatd's IRC connections against the line dialect's (issue 9's 2 KB goal; over
        # WebSocket too, bench.websocket); the C daemons would take minutes to register
        # 10,000 clients (ngircd forks per one)
        return target_for(target).is_chatd
    if scenario == "locust-fanout":
        return dialect == "line"
    return scenario in DIALECT_SCENARIOS[dialect]


def jobs(m: Matrix, *, locust_ok: bool, locust_irc: bool = False) -> list[Job]:
    """The run order: repetitions outermost, so a drift in the machine shows as spread
    between repetitions instead of as a difference between targets.

    One driver job per (target, room) does everything the lean driver measures in that
    room -- the fan-out rates, the saturation sweeps, the flood -- on one server and one
    set of connections, so each room's join storm is paid once per repetition (ngircd
    forks a resolver per connection, so its room of 1,000 is slow to fill). ``locust_irc``:
    loadtest's Locust
    user speaks IRC (``--chat-dialect irc``), so the IRC targets get Locust runs too.
    """
    out: list[Job] = []
    for rep in range(1, m.total_reps + 1):
        old = rep <= m.reps  # fan-out and flood run m.reps times
        rooms: list[int] = list(m.fanout_rooms) if old and "fanout" in m.scenarios else []
        for room in m.saturation_rooms:
            if m.sweeps_for(room, rep) and room not in rooms:
                rooms.append(room)
        if old and "flood" in m.scenarios and m.flood_room not in rooms:
            rooms.append(m.flood_room)
        for room in sorted(rooms):
            for t in m.targets:
                fan = old and "fanout" in m.scenarios and room in m.fanout_rooms
                fan = fan and takes_part(t, "fanout")
                sweeps = m.sweeps_for(room, rep) if takes_part(t, "saturation") else ()
                if not target_for(t).history:  # history's cost: the headline sweep only
                    headline = (m.headline_room, m.headline_senders)
                    sweeps = tuple(s for s in sweeps if (room, s) == headline)
                flood = old and "flood" in m.scenarios and room == m.flood_room
                flood = flood and takes_part(t, "flood")
                if fan or sweeps or flood:
                    out.append(
                        Job(
                            "driver",
                            t,
                            rep,
                            room=room,
                            scenario="flood" if flood else "",
                            fanout=fan,
                            sweeps=sweeps,
                        )
                    )
        if rep > m.aux_reps:
            continue
        if locust_ok and "fanout" in m.scenarios:
            d = m.fanout_deliveries[m.fanout_locust_at]
            for room in m.fanout_locust_rooms:
                for t in m.targets:
                    if takes_part(t, "locust-fanout", locust_irc=locust_irc):
                        out.append(
                            Job("locust", t, rep, room=room, scenario="fanout", deliveries=d)
                        )
        if locust_ok and "senders" in m.scenarios:
            for t in m.targets:
                # IRC targets' Locust runs: the first repetition only (a cross-check of
                # the lean driver's IRC figures; ngircd's join storm is slow to fill)
                irc = locust_irc and rep == 1
                if takes_part(t, "senders", locust_irc=irc):
                    out.append(Job("locust", t, rep, room=m.senders_room, scenario="senders"))
        if "slow" in m.scenarios:
            for t in m.targets:
                if takes_part(t, "slow"):
                    out.append(Job("slow", t, rep, room=m.senders_room, scenario="slow"))
        if "idle" in m.scenarios:
            for t in m.targets:
                if takes_part(t, "idle"):
                    out.append(Job("idle", t, rep))
        if "storm" in m.scenarios:
            for t in m.targets:
                if takes_part(t, "storm"):
                    out.append(Job("storm", t, rep, room=m.storm_connections, scenario="storm"))
    return out


#: Seconds to start and stop one server process.
SERVER_OVERHEAD_S = 1.0
#: Seconds a Locust run spends outside spawn, join, warm-up and window (interpreter,
#: gevent, drain, shutdown).
LOCUST_OVERHEAD_S = 2.0


#: Rough seconds per client to connect, register and join one room. The threaded engine
#: sends each of the n^2/2 join notices with a blocking call; ngircd forks a resolver
#: subprocess per connection (even with DNS and ident off), which closes all of the
#: daemon's sockets, so its cost grows with the room.
SETUP_PER_CLIENT_S: dict[str, float] = {
    "threaded": 0.005,
    "ngircd": 0.08,
    "inspircd": 0.011,
    # a WebSocket client's HTTP upgrade comes first (bench.websocket)
    "reactor-ws": 0.0025,
    "reactor-irc-ws": 0.004,
}

#: The engines the join and quit storm runs against (issue 20 judges the reactor).
STORM_TARGETS: tuple[str, ...] = ("reactor", "threaded", "asyncio")

#: Rough seconds per connection of a join and quit storm (both storms, 4,000 connections
#: on the 2-core machine): the storm's time grows with the square of its size (every join
#: and quit goes to everyone already there), so this is per connection at 4,000. The
#: threaded engine sends every notice with a blocking call under the hub lock: about a
#: minute per storm, and some connections outwait the default --register-timeout.
STORM_PER_CONN_S: dict[str, float] = {
    "reactor": 0.003,
    "asyncio": 0.003,
    "threaded": 0.028,
}

#: IRC targets that get Locust's many-senders run once loadtest speaks IRC. Not ngircd:
#: its room of 1,000 takes longest to fill (a resolver fork per connection), and the
#: lean driver already measures it in every room.
LOCUST_IRC_TARGETS: tuple[str, ...] = ("reactor-irc", "inspircd")

#: Rough deliveries/s at which each target's sweep ends (two shared cores); only the
#: duration estimate uses it, to guess how many steps a sweep climbs. chatd's engines
#: batch the lines of one read, so past their knee p99 levels off (a server that falls
#: behind reads more lines per read) and their sweeps run on to the load generator's
#: limit, near 10M deliveries/s; Redis and the IRC daemons handle each message on its
#: own, so their p99 passes the stop line soon after their knee.
CAPACITY_GUESS: dict[str, float] = {
    "reactor": 1e7,
    "reactor-ephemeral": 1e7,
    "threaded": 1e7,
    "asyncio": 1e7,
    "asyncio+uvloop": 1e7,
    "redis": 4e6,
    "reactor-irc": 1e7,
    "ngircd": 1e5,
    "inspircd": 2e6,
    "reactor-ws": 1e7,
    "reactor-irc-ws": 1e7,
}


def setup_s(target: str, n: int) -> float:
    """Rough seconds to connect and register n clients in one room."""
    return 0.3 + n * SETUP_PER_CLIENT_S.get(target, 0.0012)


def sweep_steps(m: Matrix, target: str, room: int) -> int:
    """Guessed steps of one sweep: the rates below the guessed capacity, plus the one
    that passes the stop line."""
    cap = CAPACITY_GUESS.get(target, 1e6) / max(1, room - 1)
    rates = m.saturation_rates()
    return min(len(rates), 1 + sum(1 for r in rates if r <= cap))


def step_s(m: Matrix) -> float:
    """Seconds of one saturation step: warm-up, window, the drain's quiet period, the
    counter round trips."""
    return m.saturation_warmup_s + m.saturation_window_s + 0.6


def estimate_s(job: Job, m: Matrix) -> float:
    """Predicted wall seconds for one job; the CLI sums these for its ETA."""
    if job.kind == "driver":
        t = SERVER_OVERHEAD_S + setup_s(job.target, job.room)
        if job.fanout:
            t += len(m.fanout_deliveries) * (m.warmup_s + m.window_s + 0.4)
        for _ in job.sweeps:
            steps = sweep_steps(m, job.target, job.room)
            # the last step is past saturation: its drain waits, and the server's
            # backlog takes a moment to clear
            t += steps * step_s(m) + m.saturation_drain_s + 1.0
            if m.count_sends and job.rep == 1:
                t += step_s(m) + 0.5
        if job.sweeps and m.count_sends and job.rep == 1 and job.room == m.headline_room:
            t += step_s(m) + 0.5
        if job.flood:
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
    if job.kind == "storm":
        # probes and the stats client, the idle round trip, both storms (their cost
        # grows with the square of their size), the settle time
        n = job.room
        per = STORM_PER_CONN_S.get(job.target, 0.005) * n / 4000
        return SERVER_OVERHEAD_S + 1.0 + m.storm_idle_s + n * per + 0.8
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
