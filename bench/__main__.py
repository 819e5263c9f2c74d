"""`python -m bench`: run the comparison matrix and write bench/reports/<date>-<label>/.

The CLI's job is orchestration only: detect what is installed, print the plan and its
estimated duration, run the jobs with progress, then hand the records to aggregate,
plots and report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bench import (
    aggregate,
    ircd,
    locustrun,
    matrix,
    procstat,
    scenarios,
    servers,
    storm,
    syscount,
)
from bench.report import fmt

REPORTS = Path(__file__).resolve().parent / "reports"
SCHEMA = "chatd-bench/2"


def available_targets() -> tuple[list[str], list[str]]:
    """(targets that can run here, notes on the ones that cannot: "X skipped: why")."""
    out, notes = [], []
    for name in servers.TARGETS:
        why = servers.unavailable(name)
        if why:
            notes.append(f"{name} skipped: {why}")
        else:
            out.append(name)
    return out, notes


#: Targets of `--quick` (those available): the three I/O models' extremes, the Redis
#: anchor and one IRC target, so every code path of the driver runs once.
QUICK_TARGETS: tuple[str, ...] = ("reactor", "threaded", "redis", "reactor-irc", "inspircd")


def summarize(rec: dict[str, Any]) -> str:
    """One progress line per run record."""
    m = rec["metrics"]
    if rec["scenario"] == "flood":
        body = f"{fmt(m.get('deliveries_per_s'))} deliveries/s"
    elif rec["scenario"] == "sendcount":
        body = (
            f"{rec['params'].get('senders')} senders, {fmt(rec['params'].get('offered'))} msg/s: "
            f"{fmt(m.get('sends_per_delivery'))} sends/delivery"
        )
        if m.get("deliveries_per_write") is not None:
            body += f", {fmt(m.get('deliveries_per_write'))} deliveries/write"
    elif rec["scenario"] == "storm":
        body = (
            f"{m.get('registered', 0):.0f}/{rec['params'].get('connections')} registered, "
            f"worst round trip join {fmt(m.get('rtt_join_worst_ms'))} ms "
            f"({fmt(m.get('join_s'))} s), quit {fmt(m.get('rtt_quit_worst_ms'))} ms "
            f"({fmt(m.get('quit_s'))} s)"
        )
        epb = (m.get("join_events_per_batch"), m.get("quit_events_per_batch"))
        if epb != (None, None):
            body += f", events/batch {fmt(epb[0])} / {fmt(epb[1])}"
    elif rec["scenario"] == "idle":
        body = (
            f"{rec['params'].get('connections')} conns: {fmt(m.get('rss_per_conn_bytes'))} B/conn"
        )
    else:
        body = (
            f"p50 {fmt(m.get('latency_p50_ms'))} ms p99 {fmt(m.get('latency_p99_ms'))} ms, "
            f"{fmt(m.get('deliveries_per_s'))} deliv/s"
        )
        if rec["scenario"] == "saturation":
            p = rec["params"]
            body = f"{p.get('senders')} senders, {fmt(p.get('offered'))} msg/s: " + body
            if rec.get("sweep_stop"):
                body += f" [sweep ends: {rec['sweep_stop']}]"
        elif "offered" in rec["params"]:
            body = f"offered {fmt(rec['params']['offered'])}/s: " + body
    lg = rec.get("loadgen") or {}
    srv = rec.get("server") or {}
    res = ""
    if lg.get("cpu_util") is not None:
        res += f" lg {lg['cpu_util'] * 100:.0f}%"
    if srv.get("cpu_util") is not None:
        res += f" srv {srv['cpu_util'] * 100:.0f}%"
    flag = "" if rec["valid"] else f"  INVALID: {'; '.join(rec['reasons'])}"
    return f"{rec['scenario']:>7} {rec['target']:<15} {body}{res}{flag}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Smoke run for CI: small rooms, 1 repetition, < 2 min.")
@click.option("--label", default=None, help="Report directory suffix [default: full or quick].")
@click.option(
    "--engine",
    "engines",
    multiple=True,
    type=click.Choice(list(servers.TARGETS)),
    help=(
        "Targets to run (repeatable) [default: all available; quick: "
        + ", ".join(QUICK_TARGETS)
        + " where available]."
    ),
)
@click.option(
    "--scenario",
    "scens",
    multiple=True,
    type=click.Choice(list(matrix.SCENARIOS)),
    help="Scenarios to run (repeatable) [default: all].",
)
@click.option(
    "--reps",
    type=click.IntRange(1, 20),
    default=None,
    help="Repetitions of every cell (the saturation headline's too).",
)
@click.option(
    "--room",
    "sat_rooms",
    multiple=True,
    type=click.IntRange(2, 10000),
    help="Saturation sweep: room sizes (repeatable) [default: 100 and 1000].",
)
@click.option(
    "--senders",
    "sat_senders",
    multiple=True,
    type=click.IntRange(1, 1000),
    help="Saturation sweep: sender counts (repeatable) [default: 1, 10 and 100].",
)
@click.option("--no-locust", is_flag=True, help="Skip the Locust scenarios.")
@click.option(
    "--out",
    "out_root",
    type=click.Path(path_type=Path),
    default=REPORTS,
    show_default=True,
    help="Where report directories go.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and its estimated duration only.")
@click.option(
    "--rerender",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Rebuild report.md and the plots of an existing report from its results.json.",
)
@click.option(
    "--update-readme",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Rewrite bench/README.md's headline block from an existing report.",
)
def main(
    quick: bool,
    label: str | None,
    engines: tuple[str, ...],
    scens: tuple[str, ...],
    reps: int | None,
    sat_rooms: tuple[int, ...],
    sat_senders: tuple[int, ...],
    no_locust: bool,
    out_root: Path,
    dry_run: bool,
    rerender: Path | None,
    update_readme: Path | None,
) -> None:
    """Benchmark chatd's engines (and Redis pub/sub) side by side; write a report."""
    if rerender or update_readme:
        from bench import readme

        if rerender:
            doc = readme.load(rerender)
            # The goals follow the current rules, judged on the cells and knees measured.
            doc["goals"] = all_goals(doc["cells"], doc["_matrix"], doc["knees"], doc["runs"])
            write_outputs(doc, rerender)
            click.echo(f"bench: rebuilt {rerender}/report.md, its goals and plots")
        if update_readme:
            for target in (readme.README, readme.PROJECT_README):
                readme.update(update_readme, target)
                click.echo(f"bench: updated {target} from {update_readme}")
        return
    if not servers.chatd_available():
        raise click.ClickException("`python -m chatd --help` does not run; is server/ there?")
    avail, notes = available_targets()
    if engines:
        missing = [e for e in engines if e not in avail]
        if missing:
            raise click.ClickException(f"not available here: {', '.join(missing)}")
        targets = tuple(engines)
        notes = []  # the targets not asked for need no note
    elif quick:
        irc = [t for t in ("reactor-irc", "inspircd") if t in avail][:1]
        targets = tuple(t for t in ("reactor", "threaded", "redis") if t in avail) + tuple(irc)
    else:
        targets = tuple(avail)
    m = matrix.quick(targets) if quick else matrix.full(targets)
    if scens:
        m = dataclasses.replace(m, scenarios=tuple(s for s in matrix.SCENARIOS if s in scens))
    if reps:
        m = dataclasses.replace(m, reps=reps, headline_reps=reps, aux_reps=reps)
    if sat_rooms:
        rooms = tuple(sorted(set(sat_rooms)))
        head = m.headline_room if m.headline_room in rooms else max(rooms)
        m = dataclasses.replace(m, saturation_rooms=rooms, headline_room=head)
    if sat_senders:
        sends = tuple(sorted(set(sat_senders)))
        head = m.headline_senders if m.headline_senders in sends else sends[0]
        m = dataclasses.replace(m, saturation_senders=sends, headline_senders=head)
    locust_ok = not no_locust and locustrun.available()
    if not locust_ok:
        notes.append(
            "Locust scenarios skipped: "
            + ("--no-locust" if no_locust else "locust or loadtest/chat.py missing")
        )
    locust_irc = locust_ok and locustrun.speaks_irc()
    if locust_ok and not locust_irc and any(servers.target_for(t).is_irc for t in targets):
        notes.append("Locust runs of the IRC targets skipped: loadtest/ has no --chat-dialect yet")
    if "saturation" in m.scenarios and m.count_sends:
        why = syscount.unavailable()
        if why:
            notes.append(f"send syscalls not counted: {why}")
    js = matrix.jobs(m, locust_ok=locust_ok, locust_irc=locust_irc)
    est = matrix.estimate_total_s(js, m)
    label = label or ("quick" if quick else "full")
    command = "python -m bench" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    click.echo(
        f"bench: {len(js)} jobs, targets {', '.join(targets)}, "
        f"scenarios {', '.join(m.scenarios)}, {m.reps} rep(s)"
    )
    for n in notes:
        click.echo(f"bench: note: {n}")
    click.echo(f"bench: estimated duration {est / 60:.1f} min")
    if dry_run:
        for j in js:
            click.echo(
                f"  rep {j.rep} {j.target:<15} {j.describe()}  ~{matrix.estimate_s(j, m):.0f}s"
            )
        return

    mach = procstat.machine_description()  # before pinning narrows our affinity
    srv_cpus, lg_cpus = procstat.cpu_plan()
    pinned = procstat.pin(0, lg_cpus)
    procstat.raise_nofile(20000)
    pinning = (
        f"server on CPU {min(srv_cpus)}, load generator on CPU {min(lg_cpus)}"
        if pinned and srv_cpus and lg_cpus
        else "none (fewer than 2 usable CPUs)"
    )
    caption = (
        f"{mach['cpus_usable']} CPUs shared by server and load generator "
        f"({pinning}), machine shared with other work"
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"chatd-bench-{label}-"))
    ctx = scenarios.Context(workdir=workdir, server_cpus=srv_cpus, loadgen_cpus=lg_cpus)
    click.echo(f"bench: pinning {pinning}; logs in {workdir}")

    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    remaining = est
    for i, job in enumerate(js, 1):
        elapsed = time.monotonic() - t_start
        click.echo(
            f"[{i}/{len(js)} {elapsed / 60:4.1f} min, ~{remaining / 60:.1f} min left] "
            f"rep {job.rep} {job.target}: {job.describe()}"
        )
        recs = scenarios.run_job(job, m, ctx)
        for r in recs:
            click.echo("    " + summarize(r))
        runs.extend(recs)
        remaining = max(0.0, remaining - matrix.estimate_s(job, m))
    duration = time.monotonic() - t_start
    cs = aggregate.cells(runs)
    ks = aggregate.knees(runs, m)
    gs = all_goals(cs, m, ks, runs)
    steals = [r["steal"].get("cpu") for r in runs if r.get("steal", {}).get("cpu") is not None]
    now = dt.datetime.now()
    outdir = out_root / f"{now:%Y-%m-%d}-{label}"
    outdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "label": label,
        "created": now.isoformat(timespec="seconds"),
        "command": command,
        "duration_s": duration,
        "estimated_s": est,
        "machine": mach,
        "python": sys.version.split()[0],
        "caption": caption,
        "pinning": pinning,
        "steal_mean": statistics.fmean(steals) if steals else 0.0,
        "notes": notes,
        "matrix": {k: v for k, v in dataclasses.asdict(m).items() if k != "notes"},
        "versions": {t: servers.version(t) for t in targets},
        "irc_configs": {
            t: ircd.config_text(servers.target_for(t).kind, "PORT", "RUNDIR")
            for t in targets
            if servers.target_for(t).kind in ircd.EXECUTABLES
        },
        "goals": gs,
        "knees": ks,
        "cells": cs,
        "runs": runs,
    }
    doc["_matrix"] = m
    write_outputs(doc, outdir)
    click.echo(
        f"bench: done in {duration / 60:.1f} min (estimated {est / 60:.1f}); report in {outdir}"
    )
    for g in gs:
        verdict = {True: "met", False: "NOT met", None: "not judged"}[g["met"]]
        click.echo(f"  goal: {g['goal']}: {verdict}")


def all_goals(
    cs: list[dict[str, Any]],
    m: matrix.Matrix,
    ks: list[dict[str, Any]],
    runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Issues 10, 4 and 17's goals (aggregate), then issue 20's (storm.goals)."""
    return aggregate.goals(cs, m, ks) + storm.goals(cs, m, ks, runs)


def write_outputs(doc: dict[str, Any], outdir: Path) -> None:
    """results.json, the plots and report.md into outdir (doc["_matrix"] is the Matrix)."""
    from bench import plots, report  # matplotlib only once there is something to draw

    m: matrix.Matrix = doc["_matrix"]
    plot_files = plots.all_plots(
        doc["cells"], outdir, doc["caption"], knee_ms=m.knee_p99_ms, stop_ms=m.stop_p99_ms
    )
    doc["plots"] = plot_files
    plain = {k: v for k, v in doc.items() if k != "_matrix"}
    (outdir / "results.json").write_text(json.dumps(plain, indent=1, default=str) + "\n")
    (outdir / "report.md").write_text(report.render(doc, plot_files))


if __name__ == "__main__":
    main()
