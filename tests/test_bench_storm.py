"""Tests for issue 20's side of the bench: the join and quit storm (bench/storm.py), its
place in the matrix, and the goals and tables the report shows for it.

The summary, the goals and the tables are checked on made-up measurements; one small
storm (100 connections, about 10 s) runs against a real chatd on 127.0.0.1 through the
bench's own job runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import aggregate, matrix, report, saturation_report, scenarios, servers, storm
from chatwire import check_server_log

# --------------------------------------------------------------------------- summary


def _raw(**kw: Any) -> storm.StormRaw:
    """A complete storm of 4 connections: join 10.0-12.0 s, quit 12.5-13.5 s."""
    raw = storm.StormRaw(plan=storm.StormPlan(connections=4, probes=2))
    raw.edges = {
        "idle_start": 9.0,
        "join_start": 10.0,
        "registered": 11.5,
        "join_seen": 11.9,
        "join_end": 12.0,
        "quit_start": 12.5,
        "quit_seen": 13.5,
        "quit_end": 13.5,
        "end": 14.0,
    }
    raw.pings = [
        (9.2, 0.001),  # idle
        (9.5, 0.003),  # idle
        (10.1, 0.250),  # join
        (11.0, 0.040),  # join
        (12.2, 0.001),  # between the storms: neither
        (12.6, 0.120),  # quit
        (13.4, None),  # quit, never answered: waits until the end (0.6 s)
    ]
    raw.registered, raw.joins_seen, raw.quits_seen, raw.closed_by_server = 4, 4, 4, 4
    raw.join_complete = raw.quit_complete = True
    raw.counters = {
        "before": {"writes_out": 10, "fanout_batches": 5, "fanout_events": 5},
        "joined": {"writes_out": 30, "fanout_batches": 7, "fanout_events": 9},
        "quit": {"writes_out": 38, "fanout_batches": 8, "fanout_events": 13},
    }
    raw.server = {
        "join_start": (10.0, 1.0, 1000),
        "join_end": (12.0, 2.0, 2000),
        "quit_start": (12.5, 2.0, 2000),
        "quit_end": (13.5, 2.5, 1500),
    }
    raw.loadgen_cpu = {"join_start": (10.0, 0.0), "join_end": (12.0, 0.5)}
    for k, v in kw.items():
        setattr(raw, k, v)
    return raw


def test_summary_splits_round_trips_by_the_storm_they_were_sent_in() -> None:
    met, reasons = storm.summarize(_raw())
    assert reasons == []
    assert met["rtt_idle_ms"] == pytest.approx(2.0)
    assert met["rtt_join_worst_ms"] == pytest.approx(250.0)
    assert met["rtt_join_count"] == 2 and met["rtt_join_unanswered"] == 0
    # the unanswered ping counts as waiting from 13.4 s until the end (14.0 s)
    assert met["rtt_quit_worst_ms"] == pytest.approx(600.0)
    assert met["rtt_quit_unanswered"] == 1
    assert met["rtt_worst_ms"] == pytest.approx(600.0)
    assert met["join_s"] == pytest.approx(2.0) and met["quit_s"] == pytest.approx(1.0)
    assert met["register_s"] == pytest.approx(1.5)


def test_summary_reports_the_servers_batches_per_storm() -> None:
    met, _ = storm.summarize(_raw())
    assert (met["join_writes_out"], met["quit_writes_out"]) == (20, 8)
    assert met["join_events_per_batch"] == pytest.approx(2.0)  # 4 joins in 2 batches
    assert met["quit_events_per_batch"] == pytest.approx(4.0)  # 4 quits in 1 batch
    assert met["join_server_cpu_util"] == pytest.approx(0.5)
    assert met["quit_server_cpu_util"] == pytest.approx(0.5)
    assert met["join_loadgen_cpu_util"] == pytest.approx(0.25)
    # a chatd without the counters: no events per batch, writes still there
    old = {k: {"writes_out": v["writes_out"]} for k, v in _raw().counters.items()}
    met, _ = storm.summarize(_raw(counters=old))
    assert "join_events_per_batch" not in met and met["join_writes_out"] == 20


def test_summary_says_why_a_storm_does_not_count() -> None:
    raw = _raw(registered=3, failed=1, first_error="not greeted within 120 s")
    raw.join_complete = False
    raw.probe_lag_max_s = 0.3  # more than a quarter of the worst round trip (600 ms)
    _, reasons = storm.summarize(raw)
    text = " | ".join(reasons)
    assert "3 of 4 registered" in text and "not greeted" in text
    assert "join storm not over" in text
    assert "load generator late" in text
    # a late ping that is small beside the worst round trip does not matter
    raw = _raw(probe_lag_max_s=0.12)
    assert storm.summarize(raw)[1] == []
    raw = _raw(pings=[(9.2, 0.001)])
    assert any("no round trip measured during the join storm" in r for r in storm.summarize(raw)[1])


# --------------------------------------------------------------------------- goals


def _storm_run(target: str, worst: float, valid: bool = True, reasons: tuple = ()) -> dict:
    return {
        "scenario": "storm",
        "tool": "driver",
        "target": target,
        "rep": 1,
        "params": {"connections": 4000, "probes": 10},
        "metrics": {
            "rtt_worst_ms": worst,
            "rtt_join_worst_ms": worst,
            "rtt_quit_worst_ms": worst / 2,
            "registered": 4000,
            "join_events_per_batch": 60.0,
            "quit_events_per_batch": 2000.0,
        },
        "server": {},
        "loadgen": {},
        "valid": valid,
        "reasons": list(reasons),
    }


def _goal(runs: list[dict], gid: str = "storm_rtt", ks: list | None = None) -> dict | None:
    m = matrix.full(("reactor", "reactor-irc"))
    gs = storm.goals(aggregate.cells(runs), m, ks or [], runs)
    return next((g for g in gs if g["id"] == gid), None)


def test_storm_goal_is_the_reactors_worst_round_trip_under_half_a_second() -> None:
    g = _goal([_storm_run("reactor", 230.0), _storm_run("threaded", 9000.0)])
    assert g is not None and g["met"] is True and g["measured"]["missed by"] == "no"
    g = _goal([_storm_run("reactor", 5000.0)])
    assert g is not None and g["met"] is False
    assert g["measured"]["missed by"].startswith("4500 ms")
    assert g["measured"]["events per batch (join / quit)"] == "60 / 2000"
    assert _goal([_storm_run("threaded", 100.0)]) is None  # no reactor storm: no goal


def test_an_incomplete_storm_bounds_the_goal_but_a_contended_one_does_not() -> None:
    late = _storm_run("reactor", 3000.0, valid=False, reasons=("join storm not over",))
    g = _goal([late])
    assert g is not None and g["met"] is False
    assert ">= 3000" in g["measured"]["reactor worst_ms"]
    busy = _storm_run("reactor", 3000.0, valid=False, reasons=("machine contended: 70 %",))
    g = _goal([busy])
    assert g is not None and g["met"] is None


def _knee(target: str, rate: float | None, limit: str = "p99", lg: float = 0.6) -> dict:
    return {
        "target": target,
        "room": 1000,
        "senders": 10,
        "rate": rate,
        "lower_bound": limit not in ("p99", "loss", "backpressure"),
        "limit": limit,
        "per_rep": [
            {"rep": 1, "rate": rate, "limit": limit, "detail": "p99 176 ms at 6400/s"},
        ],
        "at_knee": {"loadgen_cpu_util": {"median": lg}, "deliveries_per_write": {"median": 10}},
        "sendcount": {},
    }


def _step(target: str, rate: float, events: int, batches: int) -> dict:
    return {
        "scenario": "saturation",
        "target": target,
        "rep": 1,
        "params": {"room": 1000, "senders": 10, "offered": rate},
        "metrics": {},
        "server_counters": {"fanout_events": events, "fanout_batches": batches},
        "valid": True,
        "reasons": [],
    }


def test_knee_goals_say_by_how_much_and_what_the_counters_show() -> None:
    ks = [_knee("reactor", 3200.0), _knee("reactor-irc", 1600.0, lg=0.57)]
    runs = [_step("reactor", 3200.0, 3200, 400), _step("reactor-irc", 1600.0, 1600, 1600)]
    m = matrix.full(("reactor", "reactor-irc"))
    gs = {g["id"]: g for g in storm.goals([], m, ks, runs)}
    knee = gs["fanout_knee"]
    assert knee["met"] is False
    assert knee["measured"]["missed by"].startswith("3200 msg/s (50 % short)")
    assert knee["measured"]["events per batch"] == pytest.approx(8.0)
    assert knee["measured"]["load-gen CPU"] == "60 %"
    assert "p99 176 ms" in knee["measured"]["next step"]
    irc = gs["irc_knee_vs_line"]
    assert irc["met"] is False and irc["measured"]["events per batch (irc / line)"] == "1 / 8"
    assert irc["measured"]["load-gen CPU (irc / line)"] == "57 % / 60 %"
    # met at the goal; a knee the load generator cut short below it is not judged
    gs = {g["id"]: g for g in storm.goals([], m, [_knee("reactor", 6400.0)], [])}
    assert gs["fanout_knee"]["met"] is True
    gs = {g["id"]: g for g in storm.goals([], m, [_knee("reactor", 3200.0, "load generator")], [])}
    assert gs["fanout_knee"]["met"] is None


def test_irc_idle_goal_is_two_kilobytes_per_connection_at_ten_thousand() -> None:
    def idle(target: str, per: float) -> dict:
        return {
            "scenario": "idle",
            "tool": "driver",
            "target": target,
            "rep": 1,
            "params": {"connections": 10000, "room": 100},
            "metrics": {"rss_per_conn_bytes": per},
            "server": {},
            "loadgen": {},
            "valid": True,
            "reasons": [],
        }

    g = _goal([idle("reactor-irc", 2348.0), idle("reactor", 1969.0)], "irc_idle_rss")
    assert g is not None and g["met"] is False
    assert g["measured"]["missed by"].startswith("300 B (1.15x")
    g = _goal([idle("reactor-irc", 2000.0)], "irc_idle_rss")
    assert g is not None and g["met"] is True


def test_knee_table_shows_events_per_batch_and_load_gen_cpu_for_every_knee() -> None:
    ks = [_knee("reactor", 3200.0), _knee("reactor-irc", 1600.0, lg=0.57)]
    runs = [_step("reactor", 3200.0, 3200, 400)]
    m = matrix.full(("reactor", "reactor-irc"))
    rows = saturation_report.knee_table(ks, m, runs=runs)
    head = [c.strip() for c in rows[0].split("|")]
    cols = {t: [c.strip() for c in r.split("|")] for t, r in zip(("r", "i"), rows[2:], strict=True)}
    epb, lg = head.index("events per batch at knee"), head.index("load-gen CPU")
    assert cols["r"][epb] == "8" and cols["i"][epb] == "–"
    assert (cols["r"][lg], cols["i"][lg]) == ("60 %", "57 %")


def test_report_shows_issue_20s_goals_and_the_storm_table() -> None:
    runs = [_storm_run("reactor", 230.0), _storm_run("threaded", 9000.0)]
    cs = aggregate.cells(runs)
    m = matrix.full(("reactor", "threaded"))
    doc = {"goals": storm.goals(cs, m, [], runs), "cells": cs}
    text = "\n".join(report.issue20_goals(doc) + report.storm_section(cs, m, "caption"))
    assert "## Goals (issue 20: fan-out per loop turn)" in text
    assert "## 7. Join and quit storm" in text and "| reactor | 4000 |" in text
    assert "| threaded |" in text and "60 / 2000" in text
    assert (
        report.storm_section([], m, "caption") == [] and report.issue20_goals({"goals": []}) == []
    )


# --------------------------------------------------------------------------- matrix


def test_the_storm_runs_for_three_engines_in_the_full_matrix_and_alone() -> None:
    m = matrix.full(tuple(servers.TARGETS))
    js = [j for j in matrix.jobs(m, locust_ok=True, locust_irc=True) if j.kind == "storm"]
    assert sorted(j.target for j in js) == ["asyncio", "reactor", "threaded"]
    assert {j.room for j in js} == {4000}
    alone = matrix.Matrix(targets=("reactor",), scenarios=("storm",))
    assert [(j.kind, j.target) for j in matrix.jobs(alone, locust_ok=True)] == [
        ("storm", "reactor")
    ]
    quick = matrix.quick(("reactor", "threaded", "redis"))
    js = [j for j in matrix.jobs(quick, locust_ok=True) if j.kind == "storm"]
    assert sorted(j.target for j in js) == ["reactor", "threaded"] and js[0].room == 200
    assert all(matrix.estimate_s(j, quick) < 10 for j in js)


# --------------------------------------------------------------------------- real storm


@pytest.mark.timeout(120)
def test_a_small_storm_against_a_real_chatd_is_complete(tmp_path: Path) -> None:
    """100 connections register at once and quit at once against chatd's reactor with its
    default options, through the bench's own job runner: every one registered, every
    probe saw every join and quit, round trips were measured in both storms, and the
    server stopped cleanly."""
    if not servers.chatd_available():
        pytest.skip("chatd does not run")
    m = matrix.Matrix(
        targets=("reactor",),
        scenarios=("storm",),
        storm_connections=100,
        storm_idle_s=0.3,
        storm_wait_s=30.0,
    )
    ctx = scenarios.Context(workdir=tmp_path, server_cpus=None, loadgen_cpus=None)
    [job] = matrix.jobs(m, locust_ok=False)
    [rec] = scenarios.run_job(job, m, ctx)
    met = rec["metrics"]
    assert rec["scenario"] == "storm" and rec["server"]["exit_ok"], rec
    # a busy machine may make the run invalid (contended, late load generator), never
    # incomplete
    sound = [r for r in rec["reasons"] if not any(x in r for x in storm.UNSOUND)]
    assert sound == [], rec["reasons"]
    assert (met["registered"], met["joins_seen"], met["quits_seen"]) == (100, 100, 100)
    assert met["closed_by_server"] == 100 and met["failed"] == met["refused"] == 0
    assert met["rtt_join_count"] > 0 and met["rtt_quit_count"] > 0
    assert 0 < met["rtt_join_worst_ms"] and 0 < met["rtt_quit_worst_ms"]
    assert met["rtt_worst_ms"] == max(met["rtt_join_worst_ms"], met["rtt_quit_worst_ms"])
    assert met["join_s"] > 0 and met["quit_s"] > 0 and met["rx_bytes"] > 0
    assert "join_writes_out" in met  # chatd's /stats was read around both storms
    assert "--max-clients" not in " ".join(rec["notes"])  # chatd's default options
    [err] = tmp_path.glob("logs/reactor-*.err")
    check_server_log("chatd reactor (storm)", err)


def test_figures_at_rate_take_the_medians_of_valid_steps_and_bytes_per_delivery() -> None:
    def run(target: str, rate: float, p99: float, valid: bool = True) -> dict[str, object]:
        return {
            "scenario": "saturation",
            "target": target,
            "valid": valid,
            "params": {"room": 1000, "senders": 10, "offered": rate},
            "metrics": {
                "latency_p99_ms": p99,
                "server_cpu_us_per_delivery": 0.1,
                "deliveries_total": 1000,
            },
            "server_counters": {"bytes_out": 94_000},
            "server": {"cpu_util": 0.8},
            "loadgen": {"cpu_util": 0.5},
        }

    runs = [
        run("reactor-irc", 6400.0, 100.0),
        run("reactor-irc", 6400.0, 120.0),
        run("reactor-irc", 6400.0, 130.0),
        run("reactor-irc", 6400.0, 900.0, valid=False),
        run("reactor-irc", 3200.0, 50.0),
        run("reactor", 6400.0, 40.0),
    ]
    got = storm.figures_at_rate(runs, "reactor-irc", 1000, 10, 6400.0)
    assert got == {
        "p99_ms": 120.0,
        "server_us": 0.1,
        "bytes": 94.0,
        "server_cpu": 0.8,
        "loadgen_cpu": 0.5,
    }
    assert storm.figures_at_rate(runs, "reactor", 1000, 100, 6400.0)["p99_ms"] is None
