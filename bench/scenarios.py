"""Run one Job of the matrix and turn what it measured into run records.

A run record is a plain dict (it goes straight into results.json):

    scenario, tool, target, rep, params{...}, metrics{...},
    server{cpu_s, cpu_util, rss_bytes, hwm_bytes, threads, exit_ok},
    loadgen{cpu_s, cpu_util, saturated}, steal{cpu, cpu0, ...}, valid, reasons[], wall_s

Each job starts its own server subprocess, so a crash or leak in one cannot spill into
the next, and stops it with SIGTERM; a server that does not exit 0 invalidates the runs
it served.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import driver, locustrun, procstat, servers, stats
from bench.matrix import Job, Matrix, setup_s


@dataclass
class Context:
    """Where things go and which CPUs to use; shared by every job of a bench run."""

    workdir: Path
    server_cpus: set[int] | None
    loadgen_cpus: set[int] | None


class Window:
    """Samples the server and /proc/stat at a measurement window's edges."""

    def __init__(self, srv: servers.Server) -> None:
        self.srv = srv
        self.s0 = self.s1 = None
        self.p0 = self.p1 = None
        self.t0 = self.t1 = 0.0

    def __call__(self, edge: str) -> None:
        if edge == "start":
            self.s0, self.p0, self.t0 = (
                self.srv.sample(),
                procstat.read_proc_stat(),
                time.monotonic(),
            )
        else:
            self.s1, self.p1, self.t1 = (
                self.srv.sample(),
                procstat.read_proc_stat(),
                time.monotonic(),
            )

    def server(self) -> dict[str, Any]:
        """Server CPU seconds and share of one core in the window, RSS at its end."""
        s0, s1 = self.s0, self.s1
        if s0 is None or s1 is None:
            return {"cpu_s": None, "cpu_util": None, "rss_bytes": None}
        wall = max(1e-9, self.t1 - self.t0)
        return {
            "cpu_s": s1.cpu_s - s0.cpu_s,
            "cpu_util": (s1.cpu_s - s0.cpu_s) / wall,
            "rss_bytes": s1.rss,
            "hwm_bytes": s1.hwm,
            "threads": s1.threads,
        }

    def steal(self) -> dict[str, float]:
        if self.p0 is None or self.p1 is None:
            return {}
        return procstat.steal_fractions(self.p0, self.p1)

    def busy(self) -> dict[str, float]:
        """Share of each CPU not idle in the window: ours, softirq and anyone else's.

        Beside the processes' own CPU this shows how much else ran on the load
        generator's and the server's CPUs (loopback softirq, other jobs on a shared
        machine), which the per-process figures cannot.
        """
        if self.p0 is None or self.p1 is None:
            return {}
        return procstat.busy_fractions(self.p0, self.p1)


class Sampler:
    """Samples the server and /proc/stat every ``period_s`` in a thread, with wall times.

    A Locust run's measured window (loadtest's start gate to its drain) is known only
    afterwards, from its JSON, in Unix time; sampling all along lets the record take the
    server's CPU and the CPUs' busy shares over that window instead of over the whole run
    with its join storm. Reading three small /proc files four times a second costs the
    bench process next to nothing.
    """

    def __init__(self, srv: servers.Server, period_s: float = 0.25) -> None:
        self.srv = srv
        self.period_s = period_s
        self.samples: list[tuple[float, float, Any, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(
                (time.time(), time.monotonic(), self.srv.sample(), procstat.read_proc_stat())
            )
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def window(self, t_from: float, t_to: float) -> Window | None:
        """A Window between the samples nearest to Unix times t_from and t_to.

        None when the samples cannot resolve it: the window is shorter than four sampling
        periods, or lies outside what was sampled.
        """
        ok = [x for x in self.samples if x[2] is not None]
        if t_to - t_from < 4 * self.period_s or len(ok) < 2:
            return None
        if t_from < ok[0][0] - self.period_s or t_to > ok[-1][0] + self.period_s:
            return None
        a = min(ok, key=lambda x: abs(x[0] - t_from))
        b = min(ok, key=lambda x: abs(x[0] - t_to))
        if b[1] <= a[1]:
            return None
        win = Window(self.srv)
        _, win.t0, win.s0, win.p0 = a
        _, win.t1, win.s1, win.p1 = b
        return win


def _record(
    *,
    scenario: str,
    tool: str,
    job: Job,
    params: dict[str, Any],
    metrics: dict[str, Any],
    server: dict[str, Any],
    loadgen: dict[str, Any],
    steal: dict[str, float],
    verdict: stats.Verdict,
    wall_s: float,
    notes: list[str] | None = None,
    busy: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "tool": tool,
        "target": job.target,
        "rep": job.rep,
        "params": params,
        "metrics": metrics,
        "server": server,
        "loadgen": loadgen,
        "steal": steal,
        "cpu_busy": busy or {},
        "valid": verdict.valid,
        "reasons": verdict.reasons,
        "wall_s": wall_s,
        "notes": notes or [],
    }


def _failed(job: Job, scenario: str, tool: str, params: dict[str, Any], why: str) -> dict[str, Any]:
    """A record for a run that produced no measurement at all."""
    v = stats.Verdict()
    v.fail(why[:300])
    return _record(
        scenario=scenario,
        tool=tool,
        job=job,
        params=params,
        metrics={},
        server={},
        loadgen={},
        steal={},
        verdict=v,
        wall_s=0.0,
    )


def _finish(srv: servers.Server, records: list[dict[str, Any]]) -> None:
    """Stop the server; if it did not exit 0, every run it served is invalid."""
    ok = srv.stop()
    for r in records:
        r["server"]["exit_ok"] = ok
        r["server"]["stop_s"] = srv.stop_s
        if not ok:
            r["valid"] = False
            r["reasons"].append(f"server exit {srv.exit_code} {'; '.join(srv.notes)}".strip())


def run_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """Run one job; never raises for a server or load problem, records it instead."""
    if job.kind == "driver":
        records = _driver_job(job, m, ctx)
    elif job.kind == "idle":
        records = _idle_job(job, m, ctx)
    elif job.kind == "slow":
        records = _slow_job(job, m, ctx)
    else:
        records = _locust_job(job, m, ctx)
    for r in records:
        check_contention(r, ctx)
    return records


def check_contention(rec: dict[str, Any], ctx: Context) -> None:
    """Invalidate a run whose pinned CPUs were mostly busy with someone else's work.

    On a shared machine another job can take the server's or the load generator's CPU;
    the figures then measure that job. Per-process CPU cannot show it, /proc/stat can.
    """
    busy = rec.get("cpu_busy") or {}
    for role, cpus, util in (
        ("server", ctx.server_cpus, (rec.get("server") or {}).get("cpu_util")),
        ("load generator", ctx.loadgen_cpus, (rec.get("loadgen") or {}).get("cpu_util")),
    ):
        if not cpus:
            continue
        cpu = f"cpu{min(cpus)}"
        other = stats.foreign_busy(busy.get(cpu), util)
        if other is not None and other > stats.MAX_FOREIGN_BUSY:
            rec["valid"] = False
            rec["reasons"].append(
                f"machine contended: {other * 100:.0f} % of the {role}'s CPU ({cpu}) "
                "went to other work"
            )


# ----------------------------------------------------------------------- lean driver


def _driver_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """Paced fan-out at each offered rate, then (in the flood room) a flood."""
    target = servers.target_for(job.target)
    records: list[dict[str, Any]] = []
    base = {"room": job.room}
    try:
        srv = servers.start(target, cpus=ctx.server_cpus, logdir=ctx.workdir / "logs")
    except RuntimeError as exc:
        return [_failed(job, "fanout", "driver", base, str(exc))]
    fleet = driver.Fleet(srv.host, srv.port, redis=target.is_redis, prefix="d")
    try:
        try:
            fleet.add(job.room, senders=1)
        except (driver.DriverError, OSError) as exc:
            records.append(_failed(job, "fanout", "driver", base, f"setup: {exc}"))
            return records
        if "fanout" in m.scenarios and job.room in m.fanout_rooms:
            for d in m.fanout_deliveries:
                records.append(_paced_run(job, m, srv, fleet, d))
        if job.scenario == "flood":
            records.append(_flood_run(job, m, srv, fleet))
    finally:
        fleet.close()
        _finish(srv, records)
    return records


def _paced_run(
    job: Job, m: Matrix, srv: servers.Server, fleet: driver.Fleet, deliveries: int
) -> dict[str, Any]:
    rate = m.fanout_rate(job.room, deliveries)
    params = {"room": job.room, "offered": deliveries, "payload": m.driver_payload}
    return _paced_record(
        job,
        m,
        srv,
        fleet,
        "fanout",
        params,
        rate,
        window_s=m.window_s,
        drain_s=2.0,
        payload=m.driver_payload,
    )


def _paced_record(
    job: Job,
    m: Matrix,
    srv: servers.Server,
    fleet: driver.Fleet,
    scenario: str,
    params: dict[str, Any],
    rate: float,
    *,
    window_s: float,
    drain_s: float,
    payload: int,
) -> dict[str, Any]:
    """One paced window on an existing fleet, judged and turned into a record."""
    win = Window(srv)
    t = time.monotonic()
    try:
        r = fleet.paced(
            rate=rate,
            warmup_s=m.warmup_s,
            window_s=window_s,
            payload=payload,
            sample=m.timed_members,
            drain_s=drain_s,
            on_window=win,
        )
    except (driver.DriverError, OSError) as exc:
        return _failed(job, scenario, "driver", params, str(exc))
    util = r.driver_cpu_s / r.window_s
    saturated = stats.is_saturated(r.driver_cpu_s, r.window_s)
    verdict = stats.judge_run(
        offered_rate=rate,
        achieved_rate=r.achieved_send_rate,
        loadgen_saturated=saturated,
        lost=r.lost + r.reordered,
        errors=r.errors,
    )
    # A delivery still missing drain_s after the window is late, not lost (a gap would
    # show as lost): it enters the percentiles at drain_s, a lower bound on its latency.
    censored = [int(drain_s * 1e9)] * r.missing
    lat = stats.latency_summary_ms(r.latencies_ns + censored) or {}
    if not lat:
        verdict.fail("no latency samples")
    receivers = len(fleet.members) + len(fleet.senders) - 1
    metrics = {
        **{f"latency_{k}_ms": v for k, v in lat.items() if k != "count"},
        "latency_samples": lat.get("count", 0),
        "deliveries_per_s": r.deliveries_per_s,
        "offered_deliveries_per_s": rate * receivers,
        "offered_rate": rate,
        "achieved_send_rate": r.achieved_send_rate,
        "lost": r.lost,
        "reordered": r.reordered,
        "missing": r.missing,
        "censored_at_s": drain_s,
    }
    return _record(
        scenario=scenario,
        tool="driver",
        job=job,
        params=params,
        metrics=metrics,
        server=win.server(),
        loadgen={"cpu_s": r.driver_cpu_s, "cpu_util": util, "saturated": saturated},
        steal=win.steal(),
        busy=win.busy(),
        verdict=verdict,
        wall_s=time.monotonic() - t,
    )


def _flood_run(job: Job, m: Matrix, srv: servers.Server, fleet: driver.Fleet) -> dict[str, Any]:
    win = Window(srv)
    t = time.monotonic()
    params = {"room": job.room, "payload": m.driver_payload}
    try:
        r = fleet.flood(
            warmup_s=m.warmup_s,
            window_s=m.flood_window_s,
            payload=m.driver_payload,
            inflight_bytes=m.flood_inflight,
            on_window=win,
        )
    except (driver.DriverError, OSError) as exc:
        return _failed(job, "flood", "driver", params, str(exc))
    saturated = stats.is_saturated(r.driver_cpu_s, r.window_s)
    verdict = stats.judge_run(
        offered_rate=None, achieved_rate=None, loadgen_saturated=saturated, errors=r.errors
    )
    srv_stats = win.server()
    cpu = srv_stats.get("cpu_s")
    metrics = {
        "deliveries_per_s": r.deliveries_per_s,
        "messages_per_s": r.send_rate,
        "deliveries_per_server_cpu_s": r.deliveries / cpu if cpu else None,
    }
    notes = list(fleet.error_lines)
    return _record(
        scenario="flood",
        tool="driver",
        job=job,
        params=params,
        metrics=metrics,
        server=srv_stats,
        loadgen={
            "cpu_s": r.driver_cpu_s,
            "cpu_util": r.driver_cpu_s / r.window_s,
            "saturated": saturated,
        },
        steal=win.steal(),
        busy=win.busy(),
        verdict=verdict,
        wall_s=time.monotonic() - t,
        notes=notes,
    )


# ----------------------------------------------------------------------- slow consumer


def _slow_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """Many senders into a room, first as is, then with one member that stopped reading.

    Both variants run on the same server and the same connections, so the only change
    between them is the stalled member. A message that has not arrived slow_drain_s
    after the window (longer than the threaded engine's send timeout) counts as missing.
    """
    target = servers.target_for(job.target)
    rate = m.senders * m.sender_rate
    base = {
        "room": job.room,
        "senders": m.senders,
        "rate_per_sender": m.sender_rate,
        "payload": m.senders_payload,
    }
    records: list[dict[str, Any]] = []
    try:
        srv = servers.start(target, cpus=ctx.server_cpus, logdir=ctx.workdir / "logs")
    except RuntimeError as exc:
        return [_failed(job, "slow", "driver", {**base, "slow_reader": False}, str(exc))]
    fleet = driver.Fleet(srv.host, srv.port, redis=False, prefix="s")
    try:
        for stalled in (False, True):
            params = {**base, "slow_reader": stalled}
            try:
                if not stalled:
                    fleet.add(job.room, senders=m.senders)
                else:
                    fleet.add_stalled(rcvbuf=m.slow_rcvbuf, mss=m.slow_mss)
            except (driver.DriverError, OSError) as exc:
                records.append(_failed(job, "slow", "driver", params, f"setup: {exc}"))
                break
            records.append(
                _paced_record(
                    job,
                    m,
                    srv,
                    fleet,
                    "slow",
                    params,
                    rate,
                    window_s=m.slow_window_s,
                    drain_s=m.slow_drain_s,
                    payload=m.senders_payload,
                )
            )
    finally:
        fleet.close()
        _finish(srv, records)
    return records


# ----------------------------------------------------------------------- idle


def _idle_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """Grow one server's idle, registered clients through idle_counts; RSS at each."""
    target = servers.target_for(job.target)
    records: list[dict[str, Any]] = []
    try:
        srv = servers.start(
            target,
            cpus=ctx.server_cpus,
            logdir=ctx.workdir / "logs",
            max_clients=max(m.idle_counts) + 100,
        )
    except RuntimeError as exc:
        return [_failed(job, "idle", "driver", {}, str(exc))]
    procstat.raise_nofile(max(m.idle_counts) + 1000)
    fleet = driver.Fleet(srv.host, srv.port, redis=False, prefix="i")
    room = m.idle_room
    try:
        time.sleep(0.3)
        base = srv.sample()
        have = 0
        for n in m.idle_counts:
            t = time.monotonic()
            params = {"connections": n, "room": room}
            try:
                fleet.add(n - have, room_of=lambda i: f"#idle{i // room}", timeout_s=300.0)
            except (driver.DriverError, OSError) as exc:
                records.append(_failed(job, "idle", "driver", params, f"setup: {exc}"))
                break
            have = n
            time.sleep(0.2)
            s = srv.sample()
            if base is None or s is None:
                records.append(_failed(job, "idle", "driver", params, "server gone"))
                break
            per = (s.rss - base.rss) / n
            records.append(
                _record(
                    scenario="idle",
                    tool="driver",
                    job=job,
                    params=params,
                    metrics={
                        "rss_per_conn_bytes": per,
                        "rss_bytes": s.rss,
                        "rss_base_bytes": base.rss,
                        "connect_s": time.monotonic() - t,
                    },
                    server={"rss_bytes": s.rss, "hwm_bytes": s.hwm, "threads": s.threads},
                    loadgen={},
                    steal={},
                    verdict=stats.judge_run(
                        offered_rate=None,
                        achieved_rate=None,
                        loadgen_saturated=False,
                        errors=fleet.errors,
                    ),
                    wall_s=time.monotonic() - t,
                )
            )
    finally:
        fleet.close()
        _finish(srv, records)
    return records


# ----------------------------------------------------------------------- Locust


def locust_plan(job: Job, m: Matrix) -> locustrun.LocustPlan:
    """The Locust run for a fan-out, many-senders or slow-consumer job.

    Locust measures ``m.locust_window_s`` of steady state after the rooms are full and
    ``m.locust_warmup_s`` more. Its ``-t`` is only a cap, leaving the join storm four
    times the time the estimate expects, plus 10 s: a slow engine on a busy machine gets
    the same window, and one that needs even longer shows up as a short window (invalid)
    instead of stalling the bench.
    """
    budget = 10.0 + 4 * setup_s(job.target, job.room)
    if job.scenario == "fanout":
        return locustrun.LocustPlan(
            users=job.room,
            room=job.room,
            senders=1,
            rate_per_sender=m.fanout_rate(job.room, job.deliveries),
            payload=m.driver_payload,
            window_s=m.locust_window_s,
            spawn_rate=float(job.room),
            timing_sample=m.locust_timing_sample,
            warmup_s=m.locust_warmup_s,
            fill_budget_s=budget,
        )
    return locustrun.LocustPlan(
        users=job.room,
        room=job.room,
        senders=m.senders,
        rate_per_sender=m.sender_rate,
        payload=m.senders_payload,
        window_s=m.locust_window_s,
        spawn_rate=float(job.room),
        timing_sample=m.locust_timing_sample,
        warmup_s=m.locust_warmup_s,
        fill_budget_s=budget,
    )


#: A Locust window this much shorter than planned was cut short by -t (rooms slow to fill).
MIN_WINDOW_RATIO = 0.9


def judge_locust(r: locustrun.LocustResult, plan: locustrun.LocustPlan) -> stats.Verdict:
    """Issue 4's rule plus what loadtest's JSON can prove wrong about a Locust run.

    Saturation, a send rate below 95 % of the offered one, sequence faults and any other
    failure always invalidate. How the window is checked depends on loadtest's start
    gate: with it (the bench always asks for it) the senders start together once every
    room is full, so "started late" cannot happen; what can is a room that never filled
    or a window that -t cut short. Without it (older loadtest JSON) the last sender to
    join may have sent for only the last seconds, so that is checked instead.
    """
    # Sequence faults make a run invalid; any other failure kind does too, by name.
    lost = r.lost + r.raw_failures.get("reordered", 0)
    verdict = stats.judge_run(
        offered_rate=r.offered_rate,
        achieved_rate=r.achieved_rate,
        loadgen_saturated=r.saturated,
        lost=lost,
    )
    if r.connects < plan.users:
        verdict.fail(f"{r.connects}/{plan.users} users connected")
    others = {k: v for k, v in r.raw_failures.items() if k not in ("lost", "reordered")}
    if others:
        verdict.fail(f"locust failures {others}")
    if r.start_when_full:
        if r.measure_started_at is None:
            verdict.fail("measuring never started (the rooms did not fill within -t)")
        elif r.rooms_full is False:
            verdict.fail("measured before every user had joined (loadtest's gate timed out)")
        if r.duration_s < MIN_WINDOW_RATIO * plan.window_s:
            fill = f"{r.fill_s:.1f}" if r.fill_s is not None else "?"
            verdict.fail(
                f"measured {r.duration_s:.1f} s of the planned {plan.window_s:g} s "
                f"(the rooms took {fill} s to fill; -t {plan.run_time_s} s cut the window)"
            )
        return verdict
    # Without the gate loadtest's senders start when they have joined, and intended/sent
    # count from there, so a server that is slow to register a room can leave a sender
    # only seconds to send and still look on schedule. Ask for the whole run minus the
    # configured spawn ramp (and a second for the handshakes).
    ramp = plan.users / plan.spawn_rate + 1.0
    expect = plan.offered_rate * max(0.0, r.duration_s - ramp)
    if r.sent < stats.MIN_SEND_RATIO * expect:
        verdict.fail(
            f"senders sent {r.sent} of about {expect:.0f} messages "
            "(started late: the room took long to fill)"
        )
    return verdict


def _locust_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    plan = locust_plan(job, m)
    params: dict[str, Any] = {"room": job.room, "payload": plan.payload}
    if job.scenario == "fanout":
        params["offered"] = job.deliveries
    else:
        params.update(senders=plan.senders, rate_per_sender=plan.rate_per_sender)
    target = servers.target_for(job.target)
    try:
        srv = servers.start(target, cpus=ctx.server_cpus, logdir=ctx.workdir / "logs")
    except RuntimeError as exc:
        return [_failed(job, job.scenario, "locust", params, str(exc))]
    records: list[dict[str, Any]] = []
    try:
        win = Window(srv)
        win("start")
        with Sampler(srv) as sampler:
            lr = locustrun.run(plan, srv.host, srv.port, ctx.workdir / "locust", ctx.loadgen_cpus)
        win("end")
        if lr.result is None:
            records.append(_failed(job, job.scenario, "locust", params, lr.error))
            records[-1]["server"] = win.server()
            return records
        r = lr.result
        # Server CPU and CPU busy shares over Locust's measured window when the samples
        # resolve it, else over the whole run (join storm included); "window" says which.
        span = "run"
        if r.measure_started_at is not None:
            measured = sampler.window(r.measure_started_at, r.measure_started_at + r.duration_s)
            if measured is not None:
                win, span = measured, "measured"
        verdict = judge_locust(r, plan)
        lat = r.latency_ms or {}
        metrics = {
            **{f"latency_{k}_ms": v for k, v in lat.items() if k != "count"},
            "latency_samples": lat.get("count", 0),
            "deliveries_per_s": r.deliveries_per_s,
            "offered_rate": r.offered_rate,
            "achieved_send_rate": r.achieved_rate,
            "failures": r.failures,
            "lost": r.lost,
            "missing": r.undelivered,
            "window_s": r.duration_s,
            "fill_s": r.fill_s,
            "warmup_s": r.warmup_s,
        }
        if not lat:
            verdict.fail("no latency samples")
        records.append(
            _record(
                scenario=job.scenario,
                tool="locust",
                job=job,
                params=params,
                metrics=metrics,
                server={**win.server(), "window": span},
                loadgen={
                    "cpu_s": r.cpu_s,
                    "cpu_util": r.cpu_util,
                    "saturated": r.saturated,
                    "saturation_reasons": r.saturation_reasons,
                },
                steal=win.steal(),
                busy=win.busy(),
                verdict=verdict,
                wall_s=lr.wall_s,
                notes=[f"locust failures: {r.raw_failures}"] if r.raw_failures else [],
            )
        )
    finally:
        _finish(srv, records)
    return records
