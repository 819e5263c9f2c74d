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

from bench import counters, driver, locustrun, procstat, servers, stats, storm, syscount
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
        wall = max(1e-9, s1.t - s0.t)  # both taken right after reading /proc/PID
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
    run = {
        "driver": _driver_job,
        "idle": _idle_job,
        "slow": _slow_job,
        "storm": _storm_job,
    }.get(job.kind, _locust_job)
    try:
        records = run(job, m, ctx)
    except (driver.DriverError, RuntimeError, OSError) as exc:
        # A server that drops the load generator mid-job (an IRC daemon's own SendQ
        # limit, say) costs that job, not the run: the report shows why.
        return [_failed(job, job.kind, "driver", {}, f"{type(exc).__name__}: {exc}")]
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
            why = (
                f"machine contended: {other * 100:.0f} % of the {role}'s CPU ({cpu}) "
                "went to other work"
            )
            if why not in rec["reasons"]:  # a saturation step is checked as it runs
                rec["reasons"].append(why)


# ----------------------------------------------------------------------- lean driver


class _Room:
    """One server and one fleet in one room, reopened after a step broke them.

    A driver job runs the fan-out rates, the saturation sweeps and the flood on the same
    connections; a sweep that ends with the server dropping clients leaves the fleet
    short, so the next sweep gets a fresh server and fleet. Each server's records are
    judged by that server's exit (``_finish``).
    """

    def __init__(self, job: Job, ctx: Context, senders: int) -> None:
        self.job, self.ctx, self.senders = job, ctx, senders
        self.target = servers.target_for(job.target)
        self.srv: servers.Server | None = None
        self.fleet: driver.Fleet | None = None
        self.stats: counters.StatsClient | None = None
        self.records: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []
        self.setup_s = 0.0

    def open(self) -> str | None:
        """Start the server and fill the room; the reason when that failed."""
        try:
            self.srv = servers.start(
                self.target, cpus=self.ctx.server_cpus, logdir=self.ctx.workdir / "logs"
            )
        except RuntimeError as exc:
            return str(exc)
        if self.target.is_chatd and self.srv.line_port:
            try:  # before the fleet, so its own join notice reaches nobody
                self.stats = counters.StatsClient(self.srv.host, self.srv.line_port)
            except OSError:
                self.stats = None
        self.fleet = driver.Fleet(
            self.srv.host,
            self.srv.port,
            dialect=self.target.dialect,
            prefix="d",
            transport=self.target.transport,
        )
        n = self.job.room
        t = time.monotonic()
        try:
            # Redis: n-1 subscribers plus separate publishers, so a message reaches n-1
            # receivers, as in a chatd or IRC room of n.
            size = n - 1 + self.senders if self.target.is_redis else n
            self.fleet.add(size, senders=self.senders)
        except (driver.DriverError, OSError) as exc:
            return f"setup: {exc}"
        self.setup_s = time.monotonic() - t
        return None

    @property
    def broken(self) -> bool:
        return self.fleet is None or self.fleet.errors > 0

    def close(self) -> None:
        if self.stats is not None:
            self.stats.close()
            self.stats = None
        if self.fleet is not None:
            self.fleet.close()
            self.fleet = None
        if self.srv is not None:
            _finish(self.srv, self.records)
            for r in self.records:
                r["server"]["setup_s"] = self.setup_s  # filling the room: the join storm
            self.srv = None
        self.done += self.records
        self.records = []

    def reopen(self) -> str | None:
        self.close()
        return self.open()

    def counters(self) -> dict[str, int] | None:
        """chatd's /stats now (None for other servers, or when it does not answer)."""
        if self.stats is None:
            return None
        try:
            return self.stats.query()
        except OSError:
            self.stats = None
            return None


def _driver_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """In one room: the paced fan-out rates, the saturation sweeps, then the flood."""
    senders = max(job.sweeps) if job.sweeps else 1
    room = _Room(job, ctx, senders)
    first = "fanout" if job.fanout else ("saturation" if job.sweeps else "flood")
    why = room.open()
    try:
        if why:
            room.records.append(_failed(job, first, "driver", {"room": job.room}, why))
            return room.done + room.records
        assert room.srv is not None and room.fleet is not None
        if job.fanout:
            for d in m.fanout_deliveries:
                room.records.append(_paced_run(job, m, room.srv, room.fleet, d))
        for n_send in job.sweeps:
            if room.broken:
                why = room.reopen()
                if why:
                    room.records.append(
                        _failed(job, "saturation", "driver", _sat_params(job, m, n_send), why)
                    )
                    return room.done + room.records
            _sweep(job, m, room, n_send)
        if job.flood:
            if room.broken:
                why = room.reopen()
                if why:
                    room.records.append(_failed(job, "flood", "driver", {"room": job.room}, why))
                    return room.done + room.records
            assert room.srv is not None and room.fleet is not None
            _settle(room)
            room.records.append(_flood_run(job, m, room.srv, room.fleet))
    finally:
        room.close()
    return room.done


# ----------------------------------------------------------------------- saturation


def _sat_params(job: Job, m: Matrix, n_send: int, rate: float | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"room": job.room, "senders": n_send, "payload": m.saturation_payload}
    if rate is not None:
        p["offered"] = rate
    return p


#: A server is idle once it uses less than this share of a core over SETTLE_PERIOD_S.
SETTLE_CPU = 0.1
SETTLE_PERIOD_S = 0.25
#: Longest wait for a server to work off a backlog before the next measurement.
SETTLE_MAX_S = 15.0


def _settle(room: _Room) -> None:
    """Wait (bounded) until the server has worked off what the last step left queued.

    After a step past saturation the server may still be delivering a backlog after the
    driver's quiet period (a threaded server stalls in blocking sends); a measurement
    started then would count that work as its own.
    """
    if room.srv is None or room.fleet is None:
        return
    deadline = time.monotonic() + SETTLE_MAX_S
    prev = room.srv.sample()
    while prev is not None and time.monotonic() < deadline:
        room.fleet.drain_quiet(time.monotonic() + SETTLE_PERIOD_S)
        now = room.srv.sample()
        if now is None or now.t <= prev.t:
            return
        if (now.cpu_s - prev.cpu_s) / (now.t - prev.t) < SETTLE_CPU:
            return
        prev = now


def _sweep(job: Job, m: Matrix, room: _Room, n_send: int) -> None:
    """One saturation sweep: the total rate doubles from saturation_start until a step's
    p99 passes stop_p99_ms, a message is lost, the step is invalid (load generator
    saturated, server pushing back, contended machine) or the top rate is reached.

    Then, in repetition 1, counting steps (perf on the server's send syscalls) at the
    knee and, in the headline configuration, at the common count_rate.
    """
    steps: list[dict[str, Any]] = []
    _settle(room)
    for rate in m.saturation_rates():
        rec = _saturation_step(job, m, room, n_send, rate, count=False)
        check_contention(rec, room.ctx)
        if _was_contended(rec) and not room.broken:
            # Other work took a pinned CPU: measure the step once more. The first
            # attempt stays in the records (listed as invalid) but not in the sweep.
            rec["retried"] = True
            room.records.append(rec)
            rec = _saturation_step(job, m, room, n_send, rate, count=False)
            check_contention(rec, room.ctx)
        steps.append(rec)
        room.records.append(rec)
        stop = _stop_reason(rec, m)
        if stop:
            rec["sweep_stop"] = stop
            break
        if room.broken:
            rec["sweep_stop"] = "server dropped clients"
            break
    else:
        if steps:
            steps[-1]["sweep_stop"] = "top of the sweep"
    if not (m.count_sends and job.rep == 1) or room.broken:
        return
    if syscount.unavailable():
        return
    k = stats.knee(steps, m.knee_p99_ms)
    rates = []
    if k.rate is not None:
        rates.append(k.rate)
    if (
        job.room == m.headline_room
        and n_send == m.headline_senders
        and m.count_rate not in rates
        and any(float(st["params"]["offered"]) >= m.count_rate for st in steps)
    ):
        rates.append(m.count_rate)
    for rate in rates:
        if room.broken:
            break
        _settle(room)
        room.records.append(_saturation_step(job, m, room, n_send, rate, count=True))


def _was_contended(rec: dict[str, Any]) -> bool:
    return any("machine contended" in r for r in rec.get("reasons") or [])


def _stop_reason(rec: dict[str, Any], m: Matrix) -> str:
    """Why the sweep ends after this step ('' to go on)."""
    met = rec.get("metrics") or {}
    if not met:
        return "; ".join(rec.get("reasons") or ["no measurement"])
    if (met.get("lost") or 0) + (met.get("reordered") or 0):
        return "messages lost"
    reasons = rec.get("reasons") or []
    if _was_contended(rec):
        # Other work took a pinned CPU (twice: the step was measured again), which also
        # explains senders behind schedule or a starved load generator. Go on up the
        # rates: the steps stay invalid and the knee says "contended", but the curve is
        # drawn; only what contention cannot explain ends the sweep.
        soft = ("machine contended", "% of offered", "load generator saturated")
        reasons = [r for r in reasons if not any(x in r for x in soft)]
    if reasons:
        return "; ".join(reasons)
    p99 = met.get("latency_p99_ms")
    if p99 is not None and p99 > m.stop_p99_ms:
        return f"p99 {p99:.0f} ms > {m.stop_p99_ms:g} ms"
    return ""


def _saturation_step(
    job: Job, m: Matrix, room: _Room, n_send: int, rate: float, *, count: bool
) -> dict[str, Any]:
    """One step of a sweep (count=False), or a counting step at a measured rate.

    A counting step runs the same traffic with perf counting the server's send syscalls
    (which slows every syscall on the machine), so its latency is never reported; what
    it gives is sends per delivery and, for chatd, deliveries per queued write.
    """
    assert room.srv is not None and room.fleet is not None
    srv, fleet = room.srv, room.fleet
    scenario = "sendcount" if count else "saturation"
    params = _sat_params(job, m, n_send, rate)
    before = room.counters()
    counter: syscount.SendCounter | None = None
    if count:
        counter = syscount.SendCounter(srv.pid).__enter__()
        if not counter.enable():
            counter.__exit__(None, None, None)
            return _failed(job, scenario, "driver", params, f"perf: {counter.error}")
    try:
        rec = _paced_record(
            job,
            m,
            srv,
            fleet,
            scenario,
            params,
            rate,
            window_s=m.saturation_window_s,
            warmup_s=m.saturation_warmup_s,
            drain_s=m.saturation_drain_s,
            payload=m.saturation_payload,
            sample=m.timed_members,
            parse_budget=m.saturation_parse_budget,
            active_senders=n_send,
        )
    finally:
        if counter is not None:
            counter.disable()
            counter.__exit__(None, None, None)
    after = room.counters()
    met = rec["metrics"]
    total = met.get("deliveries_total")
    if before is not None and after is not None:
        d = counters.delta(before, after)
        rec["server_counters"] = d
        writes = d.get("writes_out")
        if writes and total:
            met["deliveries_per_write"] = total / writes
        epb = counters.events_per_batch(d)  # issue 20: room batches per loop turn
        if epb is not None:
            met["events_per_batch"] = epb
        if d.get("messages_in"):
            met["server_messages_in"] = d["messages_in"]
    if counter is not None:
        rec["send_syscalls"] = dict(counter.counts)
        met["send_syscalls"] = counter.total
        if total:
            met["sends_per_delivery"] = counter.total / total
        if counter.error:
            rec["notes"].append(f"perf: {counter.error}")
        # the point of this step is the count; its latency went through a traced kernel
        for key in [k for k in met if k.startswith("latency_")]:
            del met[key]
    return rec


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
        active_senders=1,
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
    warmup_s: float | None = None,
    sample: int | None = None,
    parse_budget: float = 0.0,
    active_senders: int = 0,
) -> dict[str, Any]:
    """One paced window on an existing fleet, judged and turned into a record."""
    win = Window(srv)
    t = time.monotonic()
    try:
        r = fleet.paced(
            rate=rate,
            warmup_s=m.warmup_s if warmup_s is None else warmup_s,
            window_s=window_s,
            payload=payload,
            sample=m.timed_members if sample is None else sample,
            drain_s=drain_s,
            parse_budget=parse_budget,
            active_senders=active_senders,
            on_window=win,
        )
    except (driver.DriverError, OSError) as exc:
        return _failed(job, scenario, "driver", params, str(exc))
    wall = r.cpu_wall_s or r.window_s
    util = r.driver_cpu_s / wall
    saturated = stats.is_saturated(r.driver_cpu_s, wall)
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
    receivers = len(fleet.receivers()) - (0 if fleet.redis else 1)
    srv_stats = win.server()
    delivered = r.deliveries_per_s * r.window_s
    cpu = srv_stats.get("cpu_s")
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
        "timed_members": r.extra.get("timed_members"),
        "messages_sent": r.extra.get("messages_sent"),
        "deliveries_total": r.extra.get("deliveries_total"),
        # server CPU (every thread: history's writer too) per delivery in the window
        "server_cpu_us_per_delivery": cpu / delivered * 1e6 if cpu and delivered else None,
    }
    return _record(
        scenario=scenario,
        tool="driver",
        job=job,
        params=params,
        metrics=metrics,
        server=srv_stats,
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
    fleet = driver.Fleet(srv.host, srv.port, dialect="line", prefix="s")
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
    fleet = driver.Fleet(
        srv.host, srv.port, dialect=target.dialect, prefix="i", transport=target.transport
    )
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


# ----------------------------------------------------------------------- storm


def _storm_job(job: Job, m: Matrix, ctx: Context) -> list[dict[str, Any]]:
    """Issue 20's join and quit storm (bench/storm.py) against chatd with its default
    options: probes in #lobby time round trips while job.room connections register at
    once, then quit at once."""
    target = servers.target_for(job.target)
    params = {"connections": job.room, "probes": m.storm_probes}
    plan = storm.StormPlan(
        connections=job.room,
        probes=m.storm_probes,
        probe_interval_s=m.storm_probe_interval_s,
        idle_s=m.storm_idle_s,
        wait_s=m.storm_wait_s,
    )
    try:
        srv = storm.start_chatd(target, cpus=ctx.server_cpus, logdir=ctx.workdir / "logs")
    except RuntimeError as exc:
        return [_failed(job, "storm", "driver", params, str(exc))]
    records: list[dict[str, Any]] = []
    t = time.monotonic()
    try:
        try:  # before the probes: its own join notice reaches none of them
            ctl: counters.StatsClient | None = counters.StatsClient(srv.host, srv.line_port)
        except OSError:
            ctl = None

        def query() -> dict[str, int] | None:
            nonlocal ctl
            if ctl is None:
                return None
            try:
                return ctl.query()
            except OSError:
                ctl.close()
                ctl = None
                return None

        try:
            raw = storm.run(srv.host, srv.port, plan, sample=srv.sample, stats_query=query)
        except OSError as exc:
            records.append(_failed(job, "storm", "driver", params, f"setup: {exc}"))
            return records
        finally:
            if ctl is not None:
                ctl.close()
        metrics, reasons = storm.summarize(raw)
        verdict = stats.Verdict()
        for why in reasons:
            verdict.fail(why)
        # CPU over both storms (the stats round trip between them included)
        s0, s1 = raw.server.get("join_start"), raw.server.get("quit_end")
        c0, c1 = raw.loadgen_cpu.get("join_start"), raw.loadgen_cpu.get("quit_end")
        server: dict[str, Any] = {}
        if s0 and s1 and s1[0] > s0[0]:
            server = {"cpu_s": s1[1] - s0[1], "cpu_util": (s1[1] - s0[1]) / (s1[0] - s0[0])}
        peak = max((s[2] for s in raw.server.values() if s), default=None)
        server["rss_bytes"] = peak
        loadgen: dict[str, Any] = {}
        if c0 and c1 and c1[0] > c0[0]:
            util = (c1[1] - c0[1]) / (c1[0] - c0[0])
            loadgen = {"cpu_s": c1[1] - c0[1], "cpu_util": util, "saturated": False}
        records.append(
            _record(
                scenario="storm",
                tool="driver",
                job=job,
                params=params,
                metrics=metrics,
                server=server,
                loadgen=loadgen,
                steal={},
                busy=raw.busy,
                verdict=verdict,
                wall_s=time.monotonic() - t,
                notes=[f"server args: {' '.join(srv.argv[3:])}"],
            )
        )
    finally:
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
    dialect = servers.target_for(job.target).dialect
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
            dialect=dialect,
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
        dialect=dialect,
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
