"""Tests for bench/: the parsing and statistics the report's claims rest on, and a smoke run.

The unit tests need no server. The driver tests run the lean driver against real servers
on loopback (chatd's reactor; ngircd and InspIRCd when installed). ``test_quick_bench_smoke``
runs ``python -m bench --quick`` end to end (about 1.5 minutes); it is skipped when chatd,
locust or matplotlib is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import (
    aggregate,
    counters,
    driver,
    ircd,
    locustrun,
    matrix,
    procstat,
    scenarios,
    servers,
    stats,
    syscount,
)
from chatwire import check_server_log

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- procstat


def test_stat_cpu_seconds_survives_a_comm_with_spaces_and_parens() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30
    text = "4242 (evil) (name x) " + " ".join(fields)
    assert procstat.parse_stat_cpu_seconds(text) == pytest.approx(400 / procstat.CLK_TCK)


def test_status_gives_rss_and_threads_in_bytes() -> None:
    text = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n"
    assert procstat.parse_status(text) == {"VmHWM": 2048 * 1024, "VmRSS": 1024 * 1024, "Threads": 7}


def test_steal_and_busy_fractions_between_two_snapshots() -> None:
    before = procstat.parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\nintr 1 2\n")
    after = procstat.parse_proc_stat("cpu  200 0 150 1000 100 0 0 50 0 0\n")
    assert procstat.steal_fractions(before, after)["cpu"] == pytest.approx(50 / 500)
    assert procstat.busy_fractions(before, after)["cpu"] == pytest.approx(1 - 300 / 500)


def test_sample_process_reads_this_process() -> None:
    s = procstat.sample_process(os.getpid())
    assert s.rss > 0 and s.threads >= 1 and s.cpu_s >= 0


# --------------------------------------------------------------------------- stats


def test_percentile_is_nearest_rank() -> None:
    vals = list(range(1, 101))
    assert stats.percentile(vals, 50) == 50
    assert stats.percentile(vals, 99) == 99
    assert stats.percentile(vals, 99.9) == 100
    assert stats.percentile(vals, 0) == 1
    assert stats.percentile([7], 99.9) == 7
    with pytest.raises(ValueError):
        stats.percentile([], 50)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_an_observed_value_and_monotonic(vals: list[int], pct: float) -> None:
    s = sorted(vals)
    p = stats.percentile(s, pct)
    assert p in s
    assert p <= stats.percentile(s, min(100.0, pct + 1.0))


def test_latency_summary_converts_ns_to_ms() -> None:
    out = stats.latency_summary_ms([1_000_000 * i for i in range(1, 1001)])
    assert out is not None
    assert out["p50"] == 500 and out["p99"] == 990 and out["p999"] == 999
    assert out["max"] == 1000 and out["count"] == 1000
    assert stats.latency_summary_ms([]) is None


def test_median_and_spread() -> None:
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 2, 3]) == 2.5
    sp = stats.spread([5.0, 1.0, 3.0])
    assert sp is not None and (sp.median, sp.lo, sp.hi, sp.n) == (3.0, 1.0, 5.0, 3)
    assert stats.spread([]) is None


def test_a_run_below_95_percent_of_offered_is_invalid() -> None:
    assert stats.judge_run(offered_rate=100, achieved_rate=95, loadgen_saturated=False).valid
    v = stats.judge_run(offered_rate=100, achieved_rate=94.9, loadgen_saturated=False)
    assert not v.valid and "95%" in v.reasons[0]


def test_saturation_loss_and_server_failure_each_invalidate_with_a_reason() -> None:
    v = stats.judge_run(
        offered_rate=None, achieved_rate=None, loadgen_saturated=True, lost=3, server_ok=False
    )
    assert not v.valid and len(v.reasons) == 3
    flood = stats.judge_run(offered_rate=None, achieved_rate=None, loadgen_saturated=False)
    assert flood.valid  # flood has no offered rate: only saturation can spoil it


def test_saturation_threshold_is_ninety_percent_of_a_core() -> None:
    assert stats.is_saturated(0.9, 1.0)
    assert not stats.is_saturated(0.89, 1.0)
    assert not stats.is_saturated(1.0, 0.0)


# --------------------------------------------------------------------------- servers


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("chatd: listening on 127.0.0.1:4040", ("127.0.0.1", 4040)),
        (
            "2026-01-01 INFO reactor listening on 127.0.0.1:39123 (engine reactor)",
            ("127.0.0.1", 39123),
        ),
        ("listening on [::1]:5000", ("::1", 5000)),
        ("listening on localhost:1", ("localhost", 1)),
        ("starting up", None),
    ],
)
def test_parse_listening(line: str, want: tuple[str, int] | None) -> None:
    assert servers.parse_listening(line) == want


def test_parse_listening_tells_the_irc_listener_from_the_line_one() -> None:
    line, irc = (
        "chatd reactor: listening on 127.0.0.1:4040",
        "chatd reactor irc: listening on 127.0.0.1:6667",
    )
    assert servers.parse_listening(line) == ("127.0.0.1", 4040)
    assert servers.parse_listening(line, "irc") is None
    assert servers.parse_listening(irc) is None
    assert servers.parse_listening(irc, "irc") == ("127.0.0.1", 6667)
    assert servers.parse_listening("chatd asyncio tls: listening on 127.0.0.1:6697") is None
    # the listener lines name their dialect (and TLS) once chatd has several listeners
    tagged = "chatd threaded line: listening on 127.0.0.1:4041"
    assert servers.parse_listening(tagged) == ("127.0.0.1", 4041)
    for tls in ("chatd reactor line tls: listening on [::1]:1", "chatd reactor irc tls: ..."):
        assert servers.parse_listening(tls) is None and servers.parse_listening(tls, "irc") is None


def test_chatd_argv_names_engine_and_uvloop() -> None:
    argv = servers.chatd_argv(servers.target_for("asyncio+uvloop"), max_clients=5, max_sendq=4096)
    assert argv[argv.index("--engine") + 1] == "asyncio" and "--uvloop" in argv
    assert argv[argv.index("--port") + 1] == "0"
    assert "--irc-port" not in argv
    irc = servers.chatd_argv(servers.target_for("reactor-irc"), max_clients=5, max_sendq=4096)
    assert irc[irc.index("--irc-port") + 1] == "0" and irc[irc.index("--engine") + 1] == "reactor"
    with pytest.raises(ValueError):
        servers.target_for("nginx")


def test_targets_are_data_with_a_dialect_each() -> None:
    assert {t.dialect for t in servers.TARGETS.values()} == {"line", "irc", "resp"}
    assert servers.ENGINES == ("reactor", "threaded", "asyncio", "asyncio+uvloop")
    assert [n for n, t in servers.TARGETS.items() if t.is_irc] == [
        "reactor-irc",
        "ngircd",
        "inspircd",
    ]
    for name in servers.TARGETS:  # available, or a reason that says why not
        why = servers.unavailable(name)
        assert why is None or len(why) > 10


def test_ircd_configs_turn_flood_protection_off() -> None:
    ng = ircd.ngircd_conf(16667)
    for line in ("Ports = 16667", "MaxPenaltyTime = 0", "MaxConnectionsIP = 0", "DNS = no"):
        assert line in ng
    insp = ircd.inspircd_conf(16668, "/tmp/x")
    for frag in ('port="16668"', 'fakelag="no"', 'netbuffersize="65534"', 'hardsendq="16777216"'):
        assert frag in insp
    assert "--runasroot" in ircd.argv("inspircd", Path("/x.conf")) or os.geteuid() != 0
    assert ircd.CLEAN_EXIT["inspircd"] >= {10}  # InspIRCd exits 10 on SIGTERM


# --------------------------------------------------------------------------- locust


SAMPLE_LOCUST = {
    "schema": "chatd-loadtest/1",
    "duration_s": 10.0,
    "latency_us": {
        "count": 500,
        "p50": 1000,
        "p90": 2000,
        "p99": 5000,
        "p99_9": 9000,
        "max": 12000,
    },
    "connect": {"count": 100, "failures": 0},
    "failures": {"total": 0, "by_kind": {}, "lost_messages": 0},
    "messages": {"intended": 1000, "sent": 900},
    "received": {
        "timed": 500,
        "counted_lines": 9999,
        "timing_receivers": 10,
        "counting_receivers": 90,
    },
    "load_generator": {
        "cpu_seconds": 4.0,
        "cpu_percent": 40.0,
        "saturated": True,
        "saturation_reasons": ["cpu_warning"],
    },
}


def test_parse_locust_report() -> None:
    r = locustrun.parse_report(SAMPLE_LOCUST, offered_rate=100.0)
    assert r.latency_ms == {
        "p50": 1.0,
        "p90": 2.0,
        "p99": 5.0,
        "p999": 9.0,
        "max": 12.0,
        "count": 500.0,
    }
    assert r.achieved_rate == pytest.approx(90.0)
    assert r.saturated and r.cpu_util == pytest.approx(0.4) and r.connects == 100
    assert r.deliveries_per_s == pytest.approx(500 * 100 / 10 / 10.0)


def test_parse_locust_report_reads_the_start_gate() -> None:
    doc = dict(SAMPLE_LOCUST, measure_started_at=1000.5, warmup_s=2.5)
    doc["warmup"] = {"start_when_full": True, "full": True, "fill_s": 1.5}
    r = locustrun.parse_report(doc, offered_rate=100.0)
    assert r.start_when_full and r.rooms_full is True
    assert (r.fill_s, r.warmup_s, r.measure_started_at) == (1.5, 2.5, 1000.5)
    old = locustrun.parse_report(SAMPLE_LOCUST, offered_rate=100.0)  # no gate in the JSON
    assert not old.start_when_full and old.rooms_full is None and old.measure_started_at is None


def test_parse_locust_report_without_samples() -> None:
    r = locustrun.parse_report({"latency_us": {"count": 0}}, offered_rate=10.0)
    assert r.latency_ms is None and r.achieved_rate is None and not r.saturated


def test_locust_command_carries_the_plan() -> None:
    plan = locustrun.LocustPlan(
        users=1000,
        room=1000,
        senders=10,
        rate_per_sender=10.0,
        payload=512,
        window_s=10,
        spawn_rate=1000,
        slow_reader=True,
        warmup_s=0.5,
        fill_budget_s=20.2,
    )
    argv = locustrun.command(plan, "127.0.0.1", 4040, Path("/tmp/x.json"))
    assert argv[argv.index("--chat-send-share") + 1] == "0.01"
    assert argv[argv.index("--host") + 1] == "127.0.0.1:4040"
    assert argv[-2:] == ["ChatUser", "SlowReaderUser"]
    assert plan.offered_rate == 100.0
    # steady state: wait for full rooms, warm up, measure a fixed window; -t is a cap
    assert "--chat-start-when-full" in argv
    assert argv[argv.index("--chat-warmup") + 1] == "0.5"
    assert argv[argv.index("--chat-measure-time") + 1] == "10"
    assert argv[argv.index("-t") + 1] == "31s"  # whole seconds, rounded up
    assert "--chat-dialect" not in argv
    irc = locustrun.command(dataclasses.replace(plan, dialect="irc"), "h", 1, Path("/x.json"))
    assert irc[irc.index("--chat-dialect") + 1] == "irc"


def test_locust_plans_leave_a_slow_engine_time_to_fill_the_room() -> None:
    m = matrix.full(("reactor", "threaded"))
    job = matrix.Job("locust", "threaded", 1, room=m.senders_room, scenario="senders")
    plan = scenarios.locust_plan(job, m)
    assert plan.window_s == m.locust_window_s and plan.warmup_s == m.locust_warmup_s
    assert plan.fill_budget_s >= 3 * matrix.setup_s("threaded", m.senders_room)
    assert plan.senders == 10 and plan.offered_rate == 100.0


# --------------------------------------------------------------------------- aggregate


def _run(target: str, value: float, valid: bool = True, rep: int = 1, **params: int) -> dict:
    return {
        "scenario": "flood",
        "tool": "driver",
        "target": target,
        "rep": rep,
        "params": params or {"room": 1000},
        "metrics": {"deliveries_per_s": value},
        "server": {"cpu_util": 1.0},
        "loadgen": {"cpu_util": 0.5},
        "steal": {},
        "valid": valid,
        "reasons": [] if valid else ["load generator saturated"],
    }


def test_cells_take_median_and_range_of_valid_runs_only() -> None:
    runs = [_run("reactor", v, rep=i) for i, v in enumerate((3e6, 1e6, 2e6), 1)]
    runs.append(_run("reactor", 99e6, valid=False, rep=4))
    (c,) = aggregate.cells(runs)
    assert c["metrics"]["deliveries_per_s"] == {"median": 2e6, "min": 1e6, "max": 3e6, "n": 3}
    assert c["n_runs"] == 4 and c["n_valid"] == 3
    assert c["invalid"] == [{"rep": 4, "reasons": ["load generator saturated"]}]


def test_goals_are_judged_or_left_open() -> None:
    m = matrix.full(("reactor", "threaded", "redis"))
    runs = [_run("reactor", 2e6), _run("threaded", 1e5), _run("redis", 3e6)]
    gs = {g["id"]: g for g in aggregate.goals(aggregate.cells(runs), m)}
    assert gs["flood_vs_threaded"]["met"] is True
    assert gs["flood_vs_redis"]["met"] is False
    assert gs["senders_p99"]["met"] is None and gs["idle_rss"]["met"] is None
    runs = [_run("reactor", 2e6), _run("threaded", 1e5, valid=False)]
    gs = {g["id"]: g for g in aggregate.goals(aggregate.cells(runs), m)}
    assert gs["flood_vs_threaded"]["met"] is None  # an invalid side is not judged


# --------------------------------------------------------------------------- matrix


ALL_TARGETS = tuple(servers.TARGETS)


def test_full_run_fits_in_45_minutes_with_every_cell_repeated() -> None:
    # 40 minutes before issue 20's join and quit storm (about 2.5 minutes more: the
    # threaded engine's storm alone takes about 2)
    m = matrix.full(ALL_TARGETS)
    js = matrix.jobs(m, locust_ok=True, locust_irc=True)
    assert matrix.estimate_total_s(js, m) <= 45 * 60
    per_cell: dict[tuple, int] = {}
    sweeps: dict[tuple, int] = {}
    for j in js:
        key = (j.kind, j.target, j.room, j.scenario, j.deliveries, j.fanout)
        per_cell[key] = per_cell.get(key, 0) + 1
        for n in j.sweeps:
            sweeps[(j.target, j.room, n)] = sweeps.get((j.target, j.room, n), 0) + 1
    for (kind, target, _room, _scen, _d, fanout), count in per_cell.items():
        if kind == "driver":
            assert count == m.reps or not fanout  # jobs without fan-out: extra sweeps
        else:
            assert count == m.aux_reps, (kind, target)
    for (target, room, n), count in sweeps.items():
        headline = (room, n) == (m.headline_room, m.headline_senders)
        assert count == (m.headline_reps if headline else m.saturation_grid_reps), target
    # The whole grid for every target; history off (reactor-ephemeral), there for the cost
    # of history, sweeps the headline configuration only.
    full_grid = [t for t in ALL_TARGETS if servers.target_for(t).history]
    headline_only = [t for t in ALL_TARGETS if not servers.target_for(t).history]
    assert headline_only == ["reactor-ephemeral"]
    grid = len(m.saturation_rooms) * len(m.saturation_senders)
    assert len(sweeps) == len(full_grid) * grid + len(headline_only)
    assert {(room, n) for t, room, n in sweeps if t == "reactor-ephemeral"} == {
        (m.headline_room, m.headline_senders)
    }


def test_history_off_is_measured_beside_the_reactor_on_the_figures_of_cost() -> None:
    m = matrix.full(ALL_TARGETS)
    js = matrix.jobs(m, locust_ok=True, locust_irc=True)
    kinds = {(j.kind, j.fanout, j.flood) for j in js if j.target == "reactor-ephemeral"}
    assert kinds == {("driver", False, False), ("idle", False, False)}
    on = servers.target_for("reactor")
    off = servers.target_for("reactor-ephemeral")
    assert (on.engine, on.history) == ("reactor", True)
    assert (off.engine, off.history) == ("reactor", False)


def test_each_dialect_runs_only_where_its_load_generator_can_go() -> None:
    m = matrix.full(ALL_TARGETS)
    js = matrix.jobs(m, locust_ok=True, locust_irc=False)
    for j in js:
        t = servers.target_for(j.target)
        if t.is_redis:
            assert j.kind == "driver"  # Locust cannot speak RESP
        if t.is_irc and j.kind == "idle":
            assert j.target == "reactor-irc"  # chatd's IRC connections against its line ones
        elif t.is_irc:
            assert j.kind == "driver" and not j.flood  # no IRC Locust user yet, no flood
    with_irc = matrix.jobs(m, locust_ok=True, locust_irc=True)
    irc_locust = [j for j in with_irc if j.kind == "locust" and servers.target_for(j.target).is_irc]
    assert {j.scenario for j in irc_locust} == {"senders"} and {j.rep for j in irc_locust} == {1}


def test_saturation_rates_double_from_the_start() -> None:
    m = matrix.full(("reactor",))
    rates = m.saturation_rates()
    assert rates[0] == 50 and all(b == 2 * a for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] <= m.saturation_max
    assert m.sweeps_for(1000, 1) == (1, 10, 100)
    assert m.sweeps_for(1000, 2) == (10,) and m.sweeps_for(100, 2) == ()
    assert m.sweeps_for(1000, m.headline_reps + 1) == () and m.sweeps_for(10, 1) == ()


def test_quick_run_is_estimated_at_about_two_minutes() -> None:
    m = matrix.quick(("reactor", "threaded", "redis", "inspircd"))
    assert matrix.estimate_total_s(matrix.jobs(m, locust_ok=True), m) < 150


# --------------------------------------------------------------------------- smoke


def _missing_for_smoke() -> str | None:
    for mod in ("matplotlib", "locust", "click"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed"
    if not servers.chatd_available():
        return "chatd does not run"
    if not locustrun.available():
        return "locust or loadtest/chat.py missing"
    return None


#: Reasons a contended machine cannot explain: the harness or a server is broken.
_HARD_FAILURES = ("lost or reordered", "connection errors", "server exit", "not start", "setup")


def _contended(run: dict) -> bool:
    """Invalid because other work took a pinned CPU (expected on a shared machine), and
    for nothing a busy machine cannot cause (falling behind the schedule it can)."""
    reasons = run.get("reasons") or []
    busy = any("machine contended" in r for r in reasons)
    return busy and not any(h in r for r in reasons for h in _HARD_FAILURES)


def _sane(run: dict) -> list[str]:
    """What is wrong with a valid run's figures (empty: nothing)."""
    m, scen = run["metrics"], run["scenario"]
    bad = []
    if scen == "flood" and not m.get("deliveries_per_s", 0) > 0:
        bad.append("flood without deliveries")
    if scen in ("fanout", "saturation", "senders", "slow"):
        if not m.get("latency_p99_ms", 0) > 0 or not m.get("deliveries_per_s", 0) > 0:
            bad.append("no latency or no deliveries")
        if m.get("lost"):
            bad.append("valid with losses")
    if scen == "sendcount" and not m.get("sends_per_delivery", 0) > 0:
        bad.append("no sends counted")
    if scen == "idle" and not m.get("rss_bytes", 0) > 0:
        bad.append("no RSS")
    if scen == "storm":
        if m.get("registered") != run["params"]["connections"]:
            bad.append("a valid storm where not every connection registered")
        if not m.get("rtt_join_worst_ms", 0) > 0 or not m.get("rtt_quit_worst_ms", 0) > 0:
            bad.append("no round trips in a storm")
    return bad


def _check_chatd_logs(tmp: Path) -> None:
    """The stderr of each chatd the bench ran (``bench.servers.start`` names them
    TARGET-NS.err in its work folder's logs/) holds no traceback or ERROR record."""
    chatd = {name.replace("+", "_") for name, t in servers.TARGETS.items() if t.is_chatd}
    logs = [p for p in tmp.glob("*/logs/*.err") if p.name.rsplit("-", 1)[0] in chatd]
    assert logs, f"no chatd stderr under {tmp}"
    for path in logs:
        check_server_log(f"bench's chatd {path.stem}", path)


@pytest.mark.timeout(240)
def test_quick_bench_smoke(tmp_path: Path) -> None:
    """`python -m bench --quick` runs every scenario and writes a complete report.

    Structure is always checked. Figures are judged on valid runs; a scenario may have
    none only when every one of its runs was invalid because the machine was contended
    (other jobs on the pinned CPUs, as while other tests run), and the two-minute budget
    is asserted only when no run was contended: a busy machine must not fail this test,
    a broken harness must.
    """
    why = _missing_for_smoke()
    if why:
        pytest.skip(why)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--label", "smoke", "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=230,
            check=False,
            env={**os.environ, "TMPDIR": str(tmp)},  # its servers' logs land in tmp_path
        )
    except subprocess.TimeoutExpired:
        load = os.getloadavg()[0]
        if load > 2 * (os.cpu_count() or 1):
            pytest.skip(f"quick bench ran out of time on a busy machine (load average {load:.0f})")
        raise
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (outdir,) = out.iterdir()
    doc = json.loads((outdir / "results.json").read_text())
    assert doc["schema"] == "chatd-bench/2"
    runs = doc["runs"]
    # Every server the bench started stopped cleanly, and no chatd wrote a traceback.
    unclean = [(r["target"], r["scenario"]) for r in runs if r["server"].get("exit_ok") is False]
    assert not unclean, unclean
    _check_chatd_logs(tmp)
    harness_errors = [r for r in runs if not r["metrics"]]
    assert not harness_errors, harness_errors
    assert {r["scenario"] for r in runs} >= set(matrix.SCENARIOS)
    contended = [r for r in runs if _contended(r)]
    if not contended:
        # Under two minutes on a quiet machine (about 1.7); the margin is for a busy one.
        assert doc["duration_s"] < 150, "quick mode must finish in about two minutes"
    for scen in matrix.SCENARIOS:
        mine = [r for r in runs if r["scenario"] == scen]
        valid = [r for r in mine if r["valid"]]
        assert valid or all(_contended(r) for r in mine), [r["reasons"] for r in mine]
        for r in valid:
            assert not _sane(r), (scen, r["target"], _sane(r), r["metrics"])
    # every swept target has a knee entry saying what ended each repetition's walk
    swept = {(r["target"], r["params"]["senders"]) for r in runs if r["scenario"] == "saturation"}
    assert {(k["target"], k["senders"]) for k in doc["knees"]} == swept
    assert all(p["limit"] for k in doc["knees"] for p in k["per_rep"])
    report = (outdir / "report.md").read_text()
    for heading in (
        "## Goals (issue 20",
        "## Goals (issue 10",
        "## Goals (issue 4)",
        "## 0. Saturation",
        "## 7. Join and quit storm",
    ):
        assert heading in report
    assert "python -m bench --quick" in report
    for name in doc["plots"].values():
        assert (outdir / name).stat().st_size > 1000


def test_undelivered_locust_messages_enter_percentiles_at_the_drain_time() -> None:
    pytest.importorskip("hdrh")
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 3_600_000_000, 3)
    h.record_value(1000, 90)
    doc = {
        "latency_us": {
            "count": 90,
            "p50": 1000,
            "p90": 1000,
            "p99": 1000,
            "p99_9": 1000,
            "max": 1000,
            "hdr": h.encode().decode("ascii"),
        },
        "delivery": {"undelivered": 10},
        "options": {"drain_timeout": 2.0},
        "messages": {"intended": 10, "sent": 10},
    }
    r = locustrun.parse_report(doc, offered_rate=1.0)
    assert r.undelivered == 10 and r.latency_ms is not None
    assert r.latency_ms["p50"] == pytest.approx(1.0, rel=0.01)
    assert r.latency_ms["p99"] == pytest.approx(2000.0, rel=0.01)
    assert r.latency_ms["count"] == 100


def _plan(users: int = 1000) -> locustrun.LocustPlan:
    return locustrun.LocustPlan(
        users=users,
        room=users,
        senders=1,
        rate_per_sender=30.0,
        payload=48,
        window_s=10,
        spawn_rate=float(users),
    )


def test_a_locust_sender_that_started_late_makes_the_run_invalid() -> None:
    """Without loadtest's start gate (older JSON) the whole run was counted."""
    doc = dict(SAMPLE_LOCUST, duration_s=12.0)
    doc["load_generator"] = {"cpu_percent": 50.0, "saturated": False}
    doc["connect"] = {"count": 1000}
    doc["messages"] = {"intended": 2, "sent": 2}  # on schedule, but only for the last 0.1 s
    r = locustrun.parse_report(doc, offered_rate=30.0)
    v = scenarios.judge_locust(r, _plan())
    assert not v.valid and "started late" in v.reasons[0]
    doc["messages"] = {"intended": 290, "sent": 290}  # 12 s minus a 2 s ramp, at 30/s
    assert scenarios.judge_locust(locustrun.parse_report(doc, 30.0), _plan()).valid


def _gated(duration_s: float, full: bool | None = True, started: bool = True) -> dict:
    doc = dict(SAMPLE_LOCUST, duration_s=duration_s)
    doc["load_generator"] = {"cpu_percent": 50.0, "saturated": False}
    doc["connect"] = {"count": 1000}
    intended = round(30 * duration_s)
    doc["messages"] = {"intended": intended, "sent": intended}
    doc["measure_started_at"] = 1000.0 if started else None
    doc["warmup"] = {"start_when_full": True, "full": full, "fill_s": 4.2}
    return doc


def test_a_gated_locust_run_is_judged_on_its_window_not_on_a_late_start() -> None:
    plan = _plan()
    # the gate makes "started late" moot: a 10 s window after a 4 s join storm is valid
    assert scenarios.judge_locust(locustrun.parse_report(_gated(10.0), 30.0), plan).valid
    short = scenarios.judge_locust(locustrun.parse_report(_gated(6.0), 30.0), plan)
    assert not short.valid and "measured 6.0 s of the planned 10 s" in short.reasons[0]
    early = scenarios.judge_locust(locustrun.parse_report(_gated(10.0, full=False), 30.0), plan)
    assert not early.valid and "before every user had joined" in early.reasons[0]
    never = scenarios.judge_locust(
        locustrun.parse_report(_gated(0.0, full=False, started=False), 30.0), plan
    )
    assert not never.valid and any("never started" in why for why in never.reasons)
    # the real validity rules still hold: behind schedule, saturated
    slow = _gated(10.0)
    slow["messages"] = {"intended": 300, "sent": 280}
    assert not scenarios.judge_locust(locustrun.parse_report(slow, 30.0), plan).valid
    busy = _gated(10.0)
    busy["load_generator"] = {"saturated": True, "saturation_reasons": ["cpu"]}
    assert not scenarios.judge_locust(locustrun.parse_report(busy, 30.0), plan).valid


class _FakeServer:
    """Stands in for servers.Server: CPU grows 0.5 s per sampled second."""

    def sample(self) -> procstat.ProcSample:
        raise AssertionError("not sampled in this test")


def test_sampler_cuts_server_cpu_to_the_locust_window() -> None:
    sampler = scenarios.Sampler(_FakeServer(), period_s=0.25)  # type: ignore[arg-type]
    stat = procstat.parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\n")
    for i in range(41):  # 10 s of samples from Unix time 1000
        t = 1000.0 + i * 0.25
        s = procstat.ProcSample(t=t, cpu_s=0.5 * i * 0.25, rss=1, hwm=1, threads=1)
        sampler.samples.append((t, t, s, stat))
    win = sampler.window(1002.0, 1008.0)
    assert win is not None
    assert win.server()["cpu_s"] == pytest.approx(3.0) and win.server()["cpu_util"] == 0.5
    assert sampler.window(1002.0, 1002.5) is None  # too short to resolve
    assert sampler.window(990.0, 1008.0) is None  # starts before the samples


def test_steady_state_senders_goal_uses_the_driver_cells() -> None:
    m = matrix.full(("reactor", "threaded", "asyncio"))
    runs = []
    for target, p99 in (("reactor", 10.0), ("threaded", 60.0), ("asyncio", 40.0)):
        run = _run(target, 0.0, room=1000, slow_reader=False)
        run.update(scenario="slow", metrics={"latency_p99_ms": p99})
        runs.append(run)
    gs = {g["id"]: g for g in aggregate.goals(aggregate.cells(runs), m)}
    assert gs["senders_p99_driver"]["met"] is False  # asyncio is only 4x slower
    assert gs["senders_p99_driver"]["measured"]["threaded_over_reactor"] == 6.0
    assert gs["senders_p99"]["met"] is None


def test_matrix_survives_a_json_round_trip() -> None:
    m = matrix.full(ALL_TARGETS)
    back = matrix.from_dict(json.loads(json.dumps(dataclasses.asdict(m))))
    assert back == m


def test_a_run_on_a_contended_cpu_is_invalid() -> None:
    ctx = scenarios.Context(Path("/tmp"), server_cpus={0}, loadgen_cpus={1})
    rec = _run("threaded", 1e7)
    rec["server"] = {"cpu_util": 0.25}
    rec["loadgen"] = {"cpu_util": 0.07}
    rec["cpu_busy"] = {"cpu0": 0.94, "cpu1": 0.98}
    scenarios.check_contention(rec, ctx)
    assert not rec["valid"] and len(rec["reasons"]) == 2  # both pinned CPUs were taken
    ok = _run("reactor", 5e7)
    ok["server"] = {"cpu_util": 0.95}
    ok["loadgen"] = {"cpu_util": 0.4}
    ok["cpu_busy"] = {"cpu0": 1.0, "cpu1": 0.6}  # softirq on top of our own use is fine
    scenarios.check_contention(ok, ctx)
    assert ok["valid"]


# --------------------------------------------------------------------------- knee


def _step(rate: float, p99: float | None, valid: bool = True, reasons=(), lost: int = 0) -> dict:
    met = {"lost": lost}
    if p99 is not None:
        met["latency_p99_ms"] = p99
    return {
        "params": {"offered": rate},
        "valid": valid,
        "reasons": list(reasons),
        "metrics": met,
    }


def test_knee_is_the_last_passing_step_before_the_first_failing_one() -> None:
    steps = [_step(50, 5), _step(100, 8), _step(200, 90), _step(400, 300), _step(800, 2000)]
    k = stats.knee(list(reversed(steps)), 100.0)  # order of the records does not matter
    assert (k.rate, k.limit, k.lower_bound) == (200, "p99", False)
    # a later step that happens to pass does not raise the knee
    k = stats.knee([_step(50, 5), _step(100, 150), _step(200, 50)], 100.0)
    assert k.rate == 50


def test_knee_limits_say_whose_limit_ended_the_walk() -> None:
    lost = stats.knee([_step(50, 5), _step(100, 5, valid=False, lost=3)], 100.0)
    assert (lost.rate, lost.limit, lost.lower_bound) == (50, "loss", False)
    sat = stats.knee([_step(50, 5), _step(100, 5, False, ["load generator saturated"])], 100.0)
    assert (sat.rate, sat.limit, sat.lower_bound) == (50, "load generator", True)
    busy = ["machine contended: 80 % of the server's CPU (cpu0) went to other work"]
    assert stats.knee([_step(50, 5, False, busy)], 100.0).limit == "contended"
    pushed = ["sent 80/s < 95% of offered 100/s"]
    assert stats.knee([_step(50, 5), _step(100, 9, False, pushed)], 100.0).limit == "backpressure"
    dropped = stats.knee([_step(50, 9, False, ["2 connection errors"])], 100.0)
    assert (dropped.rate, dropped.limit) == (None, "loss")
    top = stats.knee([_step(50, 5), _step(100, 5)], 100.0)
    assert (top.rate, top.limit, top.lower_bound) == (100, "top of sweep", True)
    first = stats.knee([_step(50, 500)], 100.0)
    assert (first.rate, first.lower_bound) == (None, False)


def _sat_run(target: str, rep: int, rate: float, p99: float, **kw: object) -> dict:
    run = _run(target, 0.0, rep=rep, room=1000, senders=10, offered=rate, payload=48)
    run.update(scenario="saturation", metrics={"latency_p99_ms": p99, "lost": 0})
    run.update(kw)
    return run


def test_knees_take_the_median_over_repetitions_and_the_knee_steps_figures() -> None:
    m = matrix.full(("reactor", "threaded"))
    runs = []
    for rep, top in ((1, 1600), (2, 3200), (3, 1600)):
        for r in (50, 100, 200, 400, 800, 1600, 3200, 6400):
            runs.append(_sat_run("reactor", rep, r, 20.0 if r <= top else 500.0))
    for rep in (1, 2, 3):
        runs += [_sat_run("threaded", rep, 50, 30.0), _sat_run("threaded", rep, 100, 900.0)]
    count = _sat_run("reactor", 1, 1600, 0.0)
    count.update(scenario="sendcount", metrics={"sends_per_delivery": 0.05})
    runs.append(count)
    ks = aggregate.knees(runs, m)
    kr = aggregate.find_knee(ks, "reactor", 1000, 10)
    assert kr is not None and kr["rate"] == 1600 and not kr["lower_bound"]
    assert [p["rate"] for p in kr["per_rep"]] == [1600, 3200, 1600]
    assert kr["at_knee"]["latency_p99_ms"]["median"] == 20.0
    assert kr["sendcount"]["1600"]["sends_per_delivery"] == 0.05
    gs = {g["id"]: g for g in aggregate.goals(aggregate.cells(runs), m, ks)}
    assert gs["knee_vs_threaded"]["met"] is True  # 1600 / 50 = 32
    assert gs["knee_vs_threaded"]["measured"]["ratio"] == 32
    assert gs["knee_vs_asyncio"]["met"] is None and gs["knee_vs_redis"]["met"] is None


def test_a_knee_goal_on_bounds_is_judged_only_when_the_bound_decides() -> None:
    m = matrix.full(("reactor", "threaded"))
    # threaded failed the first step (its knee < 50): 400 / 50 = 8 cannot prove 10x
    runs = [_sat_run("reactor", 1, r, 10.0) for r in (50, 100, 200, 400)]
    runs.append(_sat_run("reactor", 1, 800, 400.0))
    runs.append(_sat_run("threaded", 1, 50, 400.0))
    ks = aggregate.knees(runs, m)
    g = aggregate.knee_goal("g", ks, m, "threaded", 10.0)
    assert g["met"] is None and "below it" in g["measured"]["bounds"]
    # with the reactor passing 800, 800 / 50 >= 10 holds whatever threaded's knee is
    runs[-2] = _sat_run("reactor", 1, 800, 10.0)
    runs.insert(-1, _sat_run("reactor", 1, 1600, 400.0))
    g = aggregate.knee_goal("g", aggregate.knees(runs, m), m, "threaded", 10.0)
    assert g["met"] is True


# --------------------------------------------------------------------------- counters


def test_parse_stats_reads_chatd_counters() -> None:
    line = b"* stats: bytes_out=123 clients=5 writes_out=42 junk x=y"
    assert counters.parse_stats(line) == {"bytes_out": 123, "clients": 5, "writes_out": 42}
    assert counters.delta({"a": 1}, {"a": 5, "b": 2}) == {"a": 4, "b": 2}


def test_parse_perf_output() -> None:
    text = (
        "# started on Tue Dec  1 11:49:40 2026\n\n"
        "1247,,syscalls:sys_enter_sendto,52697678,100.00,,\n"
        "<not counted>,,syscalls:sys_enter_sendmsg,0,100.00,,\n"
        "7,,syscalls:sys_enter_write,52697678,100.00,,\n"
    )
    assert syscount.parse_output(text) == {"sendto": 1247, "write": 7}


def test_send_counter_counts_this_process_sends_only_while_enabled() -> None:
    why = syscount.unavailable()
    if why:
        pytest.skip(why)
    srv = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    with a, b, srv, syscount.SendCounter(os.getpid()) as c:
        assert c.enable()
        for _ in range(200):
            a.send(b"x")
            b.recv(16)
        assert c.disable()
        for _ in range(100):
            a.send(b"x")
            b.recv(16)
    assert 200 <= c.counts["sendto"] < 250, c.counts


# --------------------------------------------------------------------------- driver


def _paced_ok(fleet: driver.Fleet, rate: float, senders: int) -> driver.PacedResult:
    r = fleet.paced(
        rate=rate, warmup_s=0.1, window_s=0.6, payload=48, drain_s=10.0, active_senders=senders
    )
    assert (r.errors, r.lost, r.reordered, r.missing) == (0, 0, 0, 0), fleet.error_lines
    assert r.expected_samples > 0 and len(r.latencies_ns) == r.expected_samples
    return r


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["reactor", "ngircd", "inspircd"])
def test_the_driver_paces_any_dialect_with_any_number_of_active_senders(
    name: str, tmp_path: Path
) -> None:
    """A room of 12 with 4 senders: sweeps with 1, then 4, then 2 active senders on the
    same connections keep every sender's sequence unbroken, and every receiver (the
    idle senders too) gets every message but its own."""
    why = servers.unavailable(name)
    if why:
        pytest.skip(why)
    target = servers.target_for(name)
    srv = servers.start(target, cpus=None, logdir=tmp_path)
    fleet = driver.Fleet(srv.host, srv.port, dialect=target.dialect)
    try:
        fleet.add(12, senders=4)
        for active in (1, 4, 2):
            r = _paced_ok(fleet, 40.0, active)
            # 11 receivers per message; deliveries counted over the whole step
            assert r.extra["deliveries_total"] == r.extra["messages_sent"] * 11
    finally:
        fleet.close()
        assert srv.stop(), srv.stderr_tail
        if target.is_chatd:
            check_server_log(f"chatd {name}", srv.err_path, status=srv.exit_code)


def test_proc_io_syscw_does_not_count_socket_sends() -> None:
    """Why bench/syscount.py uses perf: /proc/PID/io's syscw misses send(2)."""
    try:
        open("/proc/self/io").close()
    except OSError:
        pytest.skip("no /proc/self/io")

    def syscw() -> int:
        with open("/proc/self/io") as f:
            return int(dict(line.split(": ") for line in f.read().splitlines())["syscw"])

    srv = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    with a, b, srv:
        before = syscw()
        for _ in range(100):
            a.send(b"x")
        after_sends = syscw()
        for _ in range(100):
            os.write(a.fileno(), b"x")
        after_writes = syscw()
    assert after_sends == before and after_writes - after_sends >= 100


def test_history_cost_goals_compare_on_and_off_at_the_same_rates() -> None:
    m = matrix.full(("reactor", "reactor-ephemeral"))
    runs = []
    for target, top, us in (("reactor", 1600, 1.05), ("reactor-ephemeral", 3200, 1.0)):
        for r in (50, 100, 200, 400, 800, 1600, 3200, 6400):
            run = _sat_run(target, 1, r, 20.0 if r <= top else 500.0)
            run["metrics"]["server_cpu_us_per_delivery"] = us * (2 if r == 50 else 1)
            # CPU-bound from 1600 msg/s: CPU per delivery is one CPU over the deliveries
            run["server"] = {"cpu_util": 0.5 if r < 1600 else 0.99}
            runs.append(run)
        idle = _run(target, 0.0, connections=10000, room=100)
        idle.update(scenario="idle", metrics={"rss_per_conn_bytes": 1900 if top > 2000 else 2000})
        runs.append(idle)
    ks = aggregate.knees(runs, m)
    cs = aggregate.cells(runs)
    assert aggregate.history_rates(cs, ks, m) == [50, 100, 200, 400, 800, 1600]
    gs = {g["id"]: g for g in aggregate.goals(cs, m, ks)}
    assert gs["history_knee"]["met"] is False  # one step lower: half of off's knee
    assert gs["history_knee"]["measured"] == {"on": 1600, "off": 3200, "ratio": 0.5}
    # judged at the highest rate both passed where neither server was CPU-bound
    assert gs["history_cpu"]["met"] is True and "800 msg/s" in gs["history_cpu"]["goal"]
    assert gs["history_cpu"]["measured"]["ratio"] == pytest.approx(1.05)
    assert gs["history_idle_rss"]["met"] is True  # 2000 / 1900: within 10 %
    from bench import history_report

    doc = {"_matrix": m, "cells": cs, "knees": ks, "goals": list(gs.values()), "caption": "c"}
    text = "\n".join(history_report.section(doc))
    assert "## History's cost (issue 17)" in text
    assert "| server CPU µs per delivery at 1600 msg/s | 1.05 | 1 | 1.05 |" in text
    assert "| RSS bytes per idle connection at 10000 | 2000 | 1900 | 1.05 |" in text
    # Without history off in the run, no such goals and no section.
    solo = [r for r in runs if r["target"] == "reactor"]
    gs = {g["id"] for g in aggregate.goals(aggregate.cells(solo), m, aggregate.knees(solo, m))}
    assert not gs & set(aggregate.HISTORY_GOAL_IDS)


def test_chatd_targets_start_with_history_on_or_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    class Stop(Exception):
        pass

    def popen(argv: list[str], **kw: object) -> None:
        started.append(argv)
        raise Stop

    monkeypatch.setattr(servers, "chatd_help", lambda: "--data-dir --ephemeral --flood-rate")
    monkeypatch.setattr(servers.subprocess, "Popen", popen)
    for name in ("reactor", "reactor-ephemeral"):
        with pytest.raises(Stop):
            servers.start(servers.target_for(name), cpus=None, logdir=tmp_path)
    on, off = started
    assert "--data-dir" in on and "--ephemeral" not in on
    assert "--ephemeral" in off and "--data-dir" not in off


def test_a_plot_that_fails_to_render_is_left_out_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import plots

    def broken(cs: list[dict[str, object]], path: Path, caption: str) -> Path | None:
        raise RuntimeError("FT_Render_Glyph failed with error 0x62: raster overflow")

    monkeypatch.setattr(plots, "flood", broken)
    made = plots.all_plots([], tmp_path, "caption")
    assert "flood" not in made
    assert "the flood plot failed" in capsys.readouterr().err
