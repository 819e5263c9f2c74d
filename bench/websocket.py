"""WebSocket against TCP on the reactor, in one run: the fan-out knee and idle memory.

    python -m bench.websocket --out bench/reports/DATE-websocket
    python -m bench.websocket --quick --out DIR     # the smoke test's run: seconds
    python -m bench.websocket --rerender DIR        # report.md and plots from results.json
    python -m bench.websocket --parse-only          # the receive-path costs alone

chatd's HTTP listener (``--http-port``) carries both dialects over WebSocket, one line per
frame. This bench measures what that costs on the reactor against the same dialect over
its own TCP port, side by side in one run, through the project's own machinery:

* **The fan-out knee** (``bench.scenarios``' saturation sweep, ``bench.stats.knee``): S
  senders into a room of N, open loop, the total rate doubling per step from 50 msg/s;
  the knee is the highest rate with p99 <= 100 ms and nothing lost. Four targets:
  ``reactor`` (line dialect, TCP), ``reactor-ws`` (line dialect at ``/line``),
  ``reactor-irc`` (IRC, TCP) and ``reactor-irc-ws`` (IRC at ``/``, ``text.ircv3.net``),
  each on a fresh chatd per repetition, repetitions outermost so a drift of the machine
  shows as spread, not as a difference. The lean driver speaks WebSocket through
  ``chatload.ws`` (``bench.driver``'s docstring says how it still counts one byte per
  delivery, and how that count is checked).
* **RSS per idle connection** (``bench.scenarios``' idle scenario): N registered clients in
  rooms of 100, (server RSS - RSS before the first connection) / N, at each N.
* **The receive path** (:func:`receive_costs`): what a load generator pays per message to
  read frames with ``chatload.ws`` against newline splitting and against wsproto's
  ``Connection``, measured in this process.
* **The layer's cost per write** (:func:`server_write_costs`): chatd's own
  ``HttpSession.write`` against a bare transport's ``write``, in this process, which the
  report multiplies by the writes per second each step made (chatd's ``/stats``).

The machine is shared: before each job the run waits (bounded) for quiet CPUs, and a knee
walk whose knee other work cut short is measured again (at most twice; the first attempt
stays in the records, invalid); every server runs one copy of ``server/chatd`` taken at the
start (``bench.cluster``'s snapshot).

Goals (the issue's): the WebSocket knee at least 0.8 x the same dialect's TCP knee in the
same run; the reactor's RSS per idle WebSocket connection at most 4 KB (4096 B). The
server runs on CPU 0 and this process (the load generator) on CPU 1; the 2 cores are
shared, which every table says. ``report.md``, ``results.json`` and the plots go to
``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import itertools
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import chatload
import chatload.ws
from bench import (
    aggregate,
    cluster,
    matrix,
    procstat,
    report,
    saturation_report,
    scenarios,
    servers,
    stats,
)
from bench.__main__ import summarize
from bench.textfmt import fmt

SCHEMA = "chatd-bench-websocket/1"
#: Per dialect: (the TCP target, its WebSocket twin).
PAIRS: dict[str, tuple[str, str]] = {
    "line": ("reactor", "reactor-ws"),
    "irc": ("reactor-irc", "reactor-irc-ws"),
}
#: The goals: the WebSocket knee against TCP's, and RSS per idle WebSocket connection.
KNEE_FACTOR = 0.8
RSS_GOAL_BYTES = 4096
#: The machine is shared: before each job wait (at most this long) for its CPUs to be
#: quiet (``bench.cluster.wait_quiet``), and measure a knee walk again, at most this many
#: times, when other work cut it short (its knee's limit is "contended"); after
#: ``PATIENCE_S`` of the run, no more waiting and no more retries.
QUIET_WAIT_S = 120.0
JOB_RETRIES = 2
PATIENCE_S = 2400.0


def plan(args: argparse.Namespace) -> matrix.Matrix:
    """The saturation headline (one room, one sender count, ``--reps`` times) and the idle
    scenario, for both members of every pair asked for; ``--quick`` shrinks it to seconds."""
    targets = tuple(t for d in args.dialects for t in PAIRS[d])
    m = matrix.Matrix(
        targets=targets,
        scenarios=("saturation", "idle"),
        reps=1,
        aux_reps=1,
        saturation_rooms=(args.room,),
        saturation_senders=(args.senders,),
        headline_room=args.room,
        headline_senders=args.senders,
        headline_reps=args.reps,
        saturation_grid_reps=1,
        count_sends=not args.no_count,
        idle_counts=tuple(args.idle),
        idle_room=100,
    )
    if args.quick:
        m = dataclasses.replace(
            m,
            saturation_max=200.0,
            saturation_window_s=0.4,
            saturation_warmup_s=0.1,
            saturation_drain_s=1.0,
            stop_p99_ms=300.0,
            timed_members=20,
            count_sends=False,
            quick=True,
        )
    return m


def walk_contended(recs: list[dict[str, Any]], m: matrix.Matrix) -> bool:
    """Whether a knee walk's knee was cut short by other work on the machine."""
    steps = [r for r in recs if r["scenario"] == "saturation" and not r.get("retried")]
    return bool(steps) and stats.knee(steps, m.knee_p99_ms).limit == "contended"


def supersede(recs: list[dict[str, Any]]) -> None:
    """Mark a walk that is measured again: invalid, kept in the records with the reason,
    and out of the knees (``aggregate.knees`` skips ``retried`` records)."""
    for r in recs:
        r["retried"] = True
        r["valid"] = False
        r["reasons"].append("superseded: other work cut this walk short; measured again")


def goals(
    cs: list[dict[str, Any]], ks: list[dict[str, Any]], m: matrix.Matrix
) -> list[dict[str, Any]]:
    """Per dialect run: the knee goal (``aggregate.knee_goal``'s interval rule), then
    RSS per idle WebSocket connection at the largest N."""
    present = {c["target"] for c in cs}
    dialects = [d for d, pair in PAIRS.items() if set(pair) <= present]
    out = [
        aggregate.knee_goal(f"ws_knee_{d}", ks, m, tcp, KNEE_FACTOR, target=ws)
        for d in dialects
        for tcp, ws in [PAIRS[d]]
    ]
    n = max(m.idle_counts)
    for d in dialects:
        tcp, ws = PAIRS[d]
        rss = aggregate.median_of(
            aggregate.find(cs, "idle", ws, connections=n), "rss_per_conn_bytes"
        )
        base = aggregate.median_of(
            aggregate.find(cs, "idle", tcp, connections=n), "rss_per_conn_bytes"
        )
        measured = {
            f"{ws}_bytes": rss,
            f"{tcp}_bytes": base,
            "websocket_layer_bytes": rss - base if rss is not None and base is not None else None,
        }
        text = (
            f"reactor RSS per idle WebSocket connection ({d} dialect) at {n} <= "
            f"{RSS_GOAL_BYTES / 1024:g} KB ({RSS_GOAL_BYTES} B)"
        )
        out.append(
            aggregate._goal(  # noqa: SLF001 -- the bench's one goal record
                f"ws_idle_rss_{d}", text, measured, None if rss is None else rss <= RSS_GOAL_BYTES
            )
        )
    return out


# ----------------------------------------------------------------------- receive path


#: A relayed chat line as the driver's receivers see it (nick, stamp, padding: 57 bytes).
SAMPLE_LINE = b"d000123: LT 3 123456 98765432109876 " + b"." * 21
#: Bytes per read in the measurement, as a receiver that lags takes them.
READ_BYTES = 65536


def receive_costs(messages: int = 50_000, reps: int = 5) -> dict[str, float]:
    """Nanoseconds per message to read ``messages`` relayed lines in 64 KiB reads, each
    way a receiver can (the best of ``reps`` runs, the garbage collector off)."""
    from wsproto.connection import Connection, ConnectionType

    line = SAMPLE_LINE
    framed = bytes((0x80 | chatload.ws.TEXT, len(line))) + line
    tcp = (line + b"\n") * messages
    frames = framed * messages

    def per_message(make: Any, data: bytes, n: int) -> float:
        best = float("inf")
        for _ in range(reps):
            feed = make()
            t = time.perf_counter()
            for at in range(0, len(data), READ_BYTES):
                feed(data[at : at + READ_BYTES])
            best = min(best, time.perf_counter() - t)
        return best / n * 1e9

    def wsproto_feed() -> Any:
        conn = Connection(ConnectionType.CLIENT)

        def feed(data: bytes) -> None:
            conn.receive_data(data)
            for _event in conn.events():
                pass

        return feed

    def counter() -> Any:
        reader = chatload.ws.ServerFrames()
        return lambda data: reader.count(data, b"PING")

    few = max(1, messages // 20)  # wsproto is slow: a twentieth of the messages
    gc.disable()
    try:
        return {
            "tcp_newline_count": per_message(lambda: lambda d: d.count(b"\n"), tcp, messages),
            "ws_marker_count": per_message(lambda: lambda d: d.count(b"\x81"), frames, messages),
            "tcp_line_splitter": per_message(lambda: chatload.LineSplitter().feed, tcp, messages),
            "ws_core_feed": per_message(lambda: chatload.ws.ServerFrames().feed, frames, messages),
            "ws_core_count": per_message(counter, frames, messages),
            "wsproto_connection": per_message(wsproto_feed, framed * few, few),
        }
    finally:
        gc.enable()


def server_write_costs(reps: int = 5, n: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call of what a fan-out does per recipient and batch: the engine's
    ``transport.write`` of the encoded bytes (here a transport that only counts, so the
    engine's own work is left out), and the same through the WebSocket layer,
    ``HttpSession.write`` (frame lookup in the shared ``Framer``, then the transport). The
    difference is what the layer adds to every write of a broadcast. chatd is imported
    from the copy the run's servers ran (:data:`bench.servers.SERVER_SRC`)."""
    import timeit

    if str(servers.SERVER_SRC) not in sys.path:
        sys.path.insert(0, str(servers.SERVER_SRC))
    from chatd.web import frames, http

    class Counting:
        __slots__ = ("writes",)

        def __init__(self) -> None:
            self.writes = 0

        def write(self, data: bytes) -> None:
            self.writes += 1

    transport = Counting()
    session = http.HttpSession.__new__(http.HttpSession)
    session.transport = transport  # type: ignore[assignment]
    session.framer = http.FRAMERS[frames.TEXT]
    session.close_sent = False
    data = SAMPLE_LINE + b"\n"
    for other in range(frames.FRAMED_KEPT - 1):  # a fan-out writes the newest broadcast
        session.framer.frames(b"other %d\n" % other)
    session.framer.frames(data)
    plain = min(timeit.repeat(lambda: transport.write(data), number=n, repeat=reps)) / n * 1e9
    layer = min(timeit.repeat(lambda: session.write(data), number=n, repeat=reps)) / n * 1e9
    return {"transport_write": plain, "httpsession_write": layer, "layer": layer - plain}


RECEIVE_ROWS = (
    ("tcp_newline_count", "TCP, count newlines (`bytes.count`: the lean driver's counting)"),
    ("ws_marker_count", "WebSocket, count frame-marker bytes (the lean driver's counting)"),
    ("tcp_line_splitter", "TCP, split lines (a timing receiver)"),
    ("ws_core_feed", "WebSocket, `chatload.ws.ServerFrames.feed` (a timing receiver)"),
    ("ws_core_count", "WebSocket, `chatload.ws.ServerFrames.count` (Locust's counting receivers)"),
    ("wsproto_connection", "WebSocket, wsproto `Connection.receive_data` + `events()`"),
)


# ----------------------------------------------------------------------- run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.websocket", description=__doc__.split("\n")[0]
    )
    p.add_argument("--room", type=int, default=1000, help="room size of the knee walk")
    p.add_argument("--senders", type=int, default=10, help="senders of the knee walk")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the knee walk")
    p.add_argument(
        "--idle",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[5000, 10000],
        help="idle connection counts, comma-separated; the goal is judged at the largest",
    )
    p.add_argument(
        "--dialects",
        type=lambda s: [d for d in PAIRS if d in s.split(",")],
        default=list(PAIRS),
        help="line,irc (default both)",
    )
    p.add_argument("--no-count", action="store_true", help="skip perf's send-syscall steps")
    p.add_argument("--quick", action="store_true", help="a smoke run (seconds, few clients)")
    p.add_argument("--out", type=Path, help="report directory [bench/reports/DATE-websocket]")
    p.add_argument("--rerender", type=Path, help="rebuild DIR's report.md and plots")
    p.add_argument("--parse-only", action="store_true", help="print the receive-path costs")
    args = p.parse_args(argv)
    if args.quick:
        argv_given = set(argv if argv is not None else sys.argv[1:])
        if "--room" not in argv_given:
            args.room = 30
        if "--senders" not in argv_given:
            args.senders = 3
        if "--reps" not in argv_given:
            args.reps = 1
        if "--idle" not in argv_given:
            args.idle = [50, 100]
    if not args.dialects:
        p.error("--dialects: line, irc or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        doc = json.loads((args.rerender / "results.json").read_text())
        write_outputs(doc, args.rerender)
        print(f"bench.websocket: rebuilt {args.rerender}/report.md and its plots")
        return 0
    srv_cpus, lg_cpus = procstat.cpu_plan()
    mach = procstat.machine_description()  # before pinning narrows our affinity
    pinned = procstat.pin(0, lg_cpus)
    if args.parse_only:
        costs = receive_costs()
        for key, text in RECEIVE_ROWS:
            print(f"{costs[key]:10.0f} ns/message  {text}")
        return 0
    missing = [
        f"{t}: {why}"
        for d in args.dialects
        for t in PAIRS[d]
        if (why := servers.unavailable(t)) is not None
    ]
    if missing:
        print("bench.websocket: cannot run " + "; ".join(missing), file=sys.stderr)
        return 2
    m = plan(args)
    procstat.raise_nofile(max(m.idle_counts) + 2000)
    pinning = (
        f"server on CPU {min(srv_cpus)}, load generator on CPU {min(lg_cpus)}"
        if pinned and srv_cpus and lg_cpus
        else "none (fewer than 2 usable CPUs)"
    )
    caption = (
        f"{mach['cpus_usable']} CPUs shared by server and load generator "
        f"({pinning}), machine shared with other work"
    )
    notes: list[str] = []
    if m.count_sends:
        from bench import syscount

        why = syscount.unavailable()
        if why:
            notes.append(f"send syscalls not counted: {why}")
    js = matrix.jobs(m, locust_ok=False)
    est = matrix.estimate_total_s(js, m)
    workdir = Path(tempfile.mkdtemp(prefix="chatd-bench-websocket-"))
    # Every server of the run runs one copy of server/chatd, taken now (bench.cluster's).
    cluster.snapshot_server(workdir / "server")
    servers.SERVER_SRC = workdir / "server"
    tree = cluster.server_tree(workdir / "server")
    ctx = scenarios.Context(workdir=workdir, server_cpus=srv_cpus, loadgen_cpus=lg_cpus)
    command = "python -m bench.websocket" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    print(
        f"bench.websocket: {len(js)} jobs, targets {', '.join(m.targets)}, estimated "
        f"{est / 60:.1f} min; pinning {pinning}; logs in {workdir}",
        flush=True,
    )
    load_start = os.getloadavg()
    t0 = time.monotonic()
    runs: list[dict[str, Any]] = []
    waits: list[float] = []
    retried = 0
    for i, job in enumerate(js, 1):
        for attempt in range(JOB_RETRIES + 1):
            patient = time.monotonic() - t0 < PATIENCE_S and not args.quick
            if patient:
                waits.append(cluster.wait_quiet(lambda s: print(s, flush=True), QUIET_WAIT_S))
            print(
                f"[{i}/{len(js)} {(time.monotonic() - t0) / 60:4.1f} min] rep {job.rep} "
                f"{job.target}: {job.describe()}" + (f" (again, {attempt + 1})" if attempt else ""),
                flush=True,
            )
            recs = scenarios.run_job(job, m, ctx)
            for r in recs:
                print("    " + summarize(r), flush=True)
            again = patient and attempt < JOB_RETRIES and walk_contended(recs, m)
            if again:
                supersede(recs)
                retried += 1
            runs.extend(recs)
            if not again:
                break
    duration = time.monotonic() - t0
    waited = [w for w in waits if w >= 1.5]  # wait_quiet samples the CPUs for a second
    if waited:
        notes.append(
            f"waited for a quiet machine before {len(waited)} of {len(waits)} jobs, "
            f"{sum(waited) / 60:.1f} min in all (at most {QUIET_WAIT_S:.0f} s each)"
        )
    if retried:
        notes.append(
            f"{retried} knee walk(s) measured again because other work cut them short; "
            "the first attempts are listed under the invalid runs"
        )
    costs = receive_costs(2_000 if args.quick else 50_000, 1 if args.quick else 5)
    write_costs = server_write_costs(2 if args.quick else 5, 20_000 if args.quick else 200_000)
    load_end = os.getloadavg()
    steals = [r["steal"].get("cpu") for r in runs if r.get("steal", {}).get("cpu") is not None]
    now = dt.datetime.now()
    out = args.out or Path(__file__).resolve().parent / "reports" / f"{now:%Y-%m-%d}-websocket"
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": now.isoformat(timespec="seconds"),
        "command": command,
        "duration_s": duration,
        "estimated_s": est,
        "machine": mach,
        "python": sys.version.split()[0],
        "caption": caption,
        "pinning": pinning,
        "loadavg_start": list(load_start),
        "loadavg_end": list(load_end),
        "steal_mean": statistics.fmean(steals) if steals else 0.0,
        "notes": notes,
        "matrix": {k: v for k, v in dataclasses.asdict(m).items() if k != "notes"},
        "server_tree": tree,
        "versions": {t: servers.version(t) for t in m.targets},
        "argv": {
            t: servers.chatd_argv(servers.target_for(t), max_clients=12000, max_sendq=1 << 20)[1:]
            for t in m.targets
        },
        "receive_ns_per_message": costs,
        "server_write_ns": write_costs,
        "runs": runs,
    }
    write_outputs(doc, out)
    print(f"bench.websocket: done in {duration / 60:.1f} min; report in {out}")
    for g in doc["goals"]:
        verdict = {True: "met", False: "NOT met", None: "not judged"}[g["met"]]
        print(f"  goal: {g['goal']}: {verdict}")
    return 0


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    """Cells, knees and goals from the runs (by the current rules), then results.json,
    the plots and report.md into ``out``."""
    from bench import plots  # matplotlib only once there is something to draw

    m = matrix.from_dict(doc["matrix"])
    doc["cells"] = aggregate.cells(doc["runs"])
    doc["knees"] = aggregate.knees(doc["runs"], m)
    doc["goals"] = goals(doc["cells"], doc["knees"], m)
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    p = plots.saturation(
        doc["cells"], out / "saturation.png", doc["caption"], m.knee_p99_ms, m.stop_p99_ms
    )
    if p is not None:
        made["saturation"] = p.name
    p = plots.idle(doc["cells"], out / "idle.png", doc["caption"], goal_bytes=RSS_GOAL_BYTES)
    if p is not None:
        made["idle"] = p.name
    doc["plots"] = made
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "report.md").write_text(render(doc, m))


# ----------------------------------------------------------------------- report


def _cpu_per_delivery_rows(doc: dict[str, Any], m: matrix.Matrix) -> list[str]:
    """Server CPU per delivery (µs) at every rate each pair passed, both sides valid and
    the server below 90 % of a CPU (a CPU-bound server's figure is one CPU over the
    deliveries, the same for any two that keep up)."""
    cs = [c for c in doc["cells"] if c["scenario"] == "saturation"]
    out = []
    for d, (tcp, ws) in PAIRS.items():
        if not any(c["target"] == ws for c in cs):
            continue
        rates = sorted({c["params"]["offered"] for c in cs if c["target"] in (tcp, ws)})
        for rate in rates:
            pair = [aggregate.find(cs, "saturation", t, offered=rate) for t in (tcp, ws)]
            a, b = (aggregate.median_of(c, "server_cpu_us_per_delivery") for c in pair)
            ua, ub = (
                (c["resources"].get("server_cpu_util") or {}).get("median") if c else None
                for c in pair
            )
            if a is None or b is None or ua is None or ub is None or max(ua, ub) >= 0.9:
                continue
            out.append(
                f"| {d} | {fmt(rate)} | {a:.2f} | {b:.2f} | {b / a:.2f} | "
                f"{ua * 100:.0f} % / {ub * 100:.0f} % |"
            )
    return out


def marginal_rss(runs: list[dict[str, Any]], target: str) -> dict[int, float]:
    """Per connection count N after the first: the RSS added per connection between the
    previous count and N on the same server (the first repetition's valid idle runs).
    The fixed costs of the first connections (a listener's first use) cancel out."""
    pts = sorted(
        (r["params"]["connections"], r["metrics"]["rss_bytes"])
        for r in runs
        if r["scenario"] == "idle" and r["target"] == target and r["valid"] and r["rep"] == 1
    )
    return {n2: (b - a) / (n2 - n1) for (n1, a), (n2, b) in itertools.pairwise(pts)}


def _findings(doc: dict[str, Any], m: matrix.Matrix) -> list[str]:
    """One paragraph per knee goal, from this run's figures: the knees, how far the
    WebSocket twin was from the goal, p99 of both at TCP's knee, and the CPU the layer's
    measured cost per write adds there; then, when a goal was missed, what would fix it."""
    cs = [c for c in doc["cells"] if c["scenario"] == "saturation"]
    extra = (doc.get("server_write_ns") or {}).get("layer")
    goals_by_id = {g["id"]: g for g in doc["goals"]}
    out: list[str] = []
    missed = False
    for d, (tcp, ws) in PAIRS.items():
        g = goals_by_id.get(f"ws_knee_{d}")
        kt = aggregate.find_knee(doc["knees"], tcp, m.headline_room, m.headline_senders)
        kw = aggregate.find_knee(doc["knees"], ws, m.headline_room, m.headline_senders)
        if g is None or kt is None or kw is None:
            continue
        text = (
            f"- **{d} dialect**: knee {saturation_report.knee_text(kw)} msg/s over WebSocket "
            f"against {saturation_report.knee_text(kt)} over TCP"
        )
        ratio = g["measured"].get("ratio")
        if g["met"] is True:
            text += f" (ratio {fmt(ratio)}): met."
        elif g["met"] is False:
            missed = True
            text += (
                f": **not met**, the ratio is {'at most ' if kt['lower_bound'] else ''}"
                f"{fmt(ratio)} against {KNEE_FACTOR:g}, a whole doubling step short."
            )
        else:
            text += ": not judged."
        rate = kt["rate"]
        if rate:
            pt = aggregate.median_of(
                aggregate.find(cs, "saturation", tcp, offered=rate), "latency_p99_ms"
            )
            pw = aggregate.median_of(
                aggregate.find(cs, "saturation", ws, offered=rate), "latency_p99_ms"
            )
            c = aggregate.find(cs, "saturation", ws, offered=rate)
            dps = aggregate.median_of(c, "deliveries_per_s")
            dpw = aggregate.median_of(c, "deliveries_per_write")
            util = (c or {}).get("resources", {}).get("server_cpu_util", {}).get("median")
            if pt is not None and pw is not None:
                text += (
                    f" At {fmt(rate)} msg/s (TCP's knee) the median p99 was {fmt(pw)} ms over "
                    f"WebSocket and {fmt(pt)} ms over TCP"
                )
                if extra and dps and dpw and util is not None:
                    text += (
                        f", with the server at {util * 100:.0f} % of a CPU either way and the "
                        f"layer's {extra:.0f} ns per write adding about "
                        f"{extra * 1e-9 * dps / dpw * 100:.0f} % of a CPU of work"
                    )
                text += "."
        out.append(text)
    if not out:
        return []
    lines = ["## Findings", "", *out, ""]
    lines.append(
        "Why, as far as this run measures it: from 100 msg/s on the reactor is CPU-bound "
        "in this room (the server CPU columns below), merging more lines into each write "
        "as it falls behind, so any work added per write shows as latency rather than as "
        "CPU. WebSocket adds work on "
        'every write of a broadcast (the table "Where a WebSocket fan-out spends more"), '
        "not per delivery of a byte: framing is done once per broadcast, and reading the "
        "senders' frames is negligible at 10 senders. Where the TCP knee's p99 is already "
        "near the bound, that extra share is consistent with the WebSocket twin crossing "
        "it one step earlier."
    )
    if missed:
        lines += [
            "",
            "What would close the gap, in the server: take the layer out of the fan-out's "
            "per-member loop. `Router._fan_out` calls `handle.out.write(data)` per member, "
            "and for a WebSocket member `out` is its `HttpSession`, whose `write` looks the "
            "frames up in the shared `Framer` and then calls the engine's connection. If "
            "the upgraded session's `out` were the engine's connection itself and its "
            "`encoder` a framing wrapper of the dialect's encoder (one wrapper per inner "
            "encoder and opcode, so the router's per-encoder cache frames each broadcast "
            "once), a WebSocket member would cost the fan-out exactly what a TCP member "
            "does: one `write` of shared bytes. The session's own replies would still go "
            "through `HttpSession.write`.",
        ]
    return lines + [""]


def _step_rows(doc: dict[str, Any]) -> list[str]:
    """p99 and the load generator's CPU at every step, TCP beside WebSocket: the walk
    behind each knee, with what the doubling steps cannot show (how near the bound)."""
    cs = [c for c in doc["cells"] if c["scenario"] == "saturation"]
    out = []
    for d, (tcp, ws) in PAIRS.items():
        rates = sorted({c["params"]["offered"] for c in cs if c["target"] in (tcp, ws)})
        for rate in rates:
            cells = [aggregate.find(cs, "saturation", t, offered=rate) for t in (tcp, ws)]
            lg = [
                fmt((c["resources"].get("loadgen_cpu_util") or {}).get("median", 0) * 100, " %")
                if c and c["resources"].get("loadgen_cpu_util")
                else "–"
                for c in cells
            ]
            p99 = [report.cell_text(c, "latency_p99_ms") for c in cells]
            out.append(f"| {d} | {fmt(rate)} | {p99[0]} | {p99[1]} | {lg[0]} / {lg[1]} |")
    return out


def _layer_rows(doc: dict[str, Any]) -> list[str]:
    """Per WebSocket target and rate: the writes per second its fan-out made (deliveries/s
    over deliveries per queued write, both measured in the step) and the server CPU the
    layer's measured cost per write adds at that rate, against the CPU the server used."""
    extra = (doc.get("server_write_ns") or {}).get("layer")
    if not extra:
        return []
    cs = [c for c in doc["cells"] if c["scenario"] == "saturation"]
    out = []
    for d, (_tcp, ws) in PAIRS.items():
        for c in sorted((c for c in cs if c["target"] == ws), key=lambda c: c["params"]["offered"]):
            dps = aggregate.median_of(c, "deliveries_per_s")
            dpw = aggregate.median_of(c, "deliveries_per_write")
            util = (c["resources"].get("server_cpu_util") or {}).get("median")
            if not dps or not dpw:
                continue
            writes = dps / dpw
            share = extra * 1e-9 * writes
            used = f"{util * 100:.0f} %" if util is not None else "–"
            out.append(
                f"| {d} | {fmt(c['params']['offered'])} | {fmt(dpw)} | {fmt(writes)} | "
                f"{share * 100:.1f} % | {used} |"
            )
    return out


def _idle_rows(doc: dict[str, Any], m: matrix.Matrix) -> list[str]:
    cs = doc["cells"]
    out = []
    for d, (tcp, ws) in PAIRS.items():
        margins = [marginal_rss(doc["runs"], t) for t in (tcp, ws)]
        for i, n in enumerate(m.idle_counts):
            a = aggregate.find(cs, "idle", tcp, connections=n)
            b = aggregate.find(cs, "idle", ws, connections=n)
            if a is None and b is None:
                continue
            va = aggregate.median_of(a, "rss_per_conn_bytes")
            vb = aggregate.median_of(b, "rss_per_conn_bytes")
            layer = f"{vb - va:,.0f}" if va is not None and vb is not None else "–"
            since = f" ({m.idle_counts[i - 1]:,}→{n:,})" if i else ""
            marg = [f"{g[n]:,.0f}{since}" if n in g else "–" for g in margins]
            out.append(
                f"| {d} | {n:,} | {report.cell_text(a, 'rss_per_conn_bytes')} | "
                f"{report.cell_text(b, 'rss_per_conn_bytes')} | {layer} | {marg[0]} | "
                f"{marg[1]} |"
            )
    return out


def render(doc: dict[str, Any], m: matrix.Matrix) -> str:
    """report.md for one results document."""
    ks, cs = doc["knees"], doc["cells"]
    caption = doc["caption"]
    la0, la1 = doc.get("loadavg_start") or [0, 0, 0], doc.get("loadavg_end") or [0, 0, 0]
    mach = doc["machine"]
    lines = [
        "# WebSocket against TCP on the reactor: the fan-out knee and idle memory",
        "",
        f"Command: `{doc['command']}`  ",
        f"Run {doc['created']}, {doc['duration_s'] / 60:.1f} min (estimated "
        f"{doc['estimated_s'] / 60:.1f}); {mach['cpu_model']}, Python {doc['python']}, "
        f"{mach['kernel']}.  ",
        f"**Machine:** {caption}. Load average (1, 5, 15 min) at the start "
        f"{la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, at the end "
        f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f} (on 2 CPUs: above 2 means other work "
        f"was queued for them); mean steal {doc.get('steal_mean', 0) * 100:.2f} %. A step "
        "whose pinned CPU went mostly to other work is measured again and, if still "
        "contended, invalid.",
        "",
        "Targets: chatd's reactor with history on (its default), `--flood-rate 0`, one fresh "
        "server per job: `reactor` (line dialect, TCP), `reactor-ws` (line dialect over "
        "WebSocket at `/line`, `--http-port`), `reactor-irc` (IRC, `--irc-port`), "
        "`reactor-irc-ws` (IRC over WebSocket at `/`, subprotocol `text.ircv3.net`).",
        "",
        "## Goals",
        "",
        f"_{caption}_",
        "",
        *report.goals_table(doc),
        "",
    ]
    lines += _findings(doc, m)
    lines += [
        f"## The fan-out knee: room of {m.headline_room}, {m.headline_senders} senders",
        "",
        'The bench\'s saturation walk (`bench/README.md`, "The saturation sweep"): open '
        f"loop, the total rate doubling from {fmt(m.saturation_start)} msg/s, "
        f"{m.saturation_warmup_s:g} s of warm-up and a {m.saturation_window_s:g} s window "
        f"per step; the knee is the highest rate with p99 <= {m.knee_p99_ms:g} ms and "
        f"nothing lost, every lower step passing too. {m.headline_reps} repetition(s) per "
        "target, interleaved (repetition outermost); the knee is their median, with each "
        "repetition's in brackets. `≥` marks a knee the load generator, not the server, "
        "cut short. The load generator's CPU at the knee is beside every knee.",
        "",
        f"_{caption}_",
        "",
        *saturation_report.knee_table(ks, m, only_headline=True),
        "",
    ]
    if "saturation" in doc.get("plots", {}):
        lines += [f"![p99 against the offered rate]({doc['plots']['saturation']})", ""]
    lines += [
        "The rates double, so two knees are either equal or a factor of 2 (or more) "
        f'apart: "WebSocket >= {KNEE_FACTOR:g} x TCP" holds exactly when the WebSocket '
        "knee is the same step. Every step, median p99 over the valid repetitions "
        "[min–max] (valid/runs), with the load generator's CPU (a step where it reached "
        "90 % is invalid: the load generator, not the server, would be measured):",
        "",
        f"_{caption}_",
        "",
        "| dialect | msg/s | TCP p99 ms | WebSocket p99 ms | load-gen CPU (TCP / WS) |",
        "|---|---:|---:|---:|---|",
        *_step_rows(doc),
        "",
    ]
    cpu_rows = _cpu_per_delivery_rows(doc, m)
    if cpu_rows:
        lines += [
            "**What a WebSocket delivery costs the server**: server CPU time per delivery "
            "at every rate both twins passed with the server below 90 % of a CPU (median "
            "over repetitions; `/proc/PID/stat`, all threads, over the step's window).",
            "",
            f"_{caption}_",
            "",
            "| dialect | msg/s | TCP µs/delivery | WebSocket µs/delivery | WS / TCP "
            "| server CPU (TCP / WS) |",
            "|---|---:|---:|---:|---:|---|",
            *cpu_rows,
            "",
        ]
    wc = doc.get("server_write_ns") or {}
    layer_rows = _layer_rows(doc)
    if layer_rows:
        lines += [
            "**Where a WebSocket fan-out spends more.** The broadcast is framed once "
            "(chatd's shared `Framer`), but every write of it to a member goes through the "
            "layer: `HttpSession.write` finds the frames for that `bytes` object and then "
            "calls the engine's `transport.write`. Measured in the load generator's process "
            "on chatd's own classes (a transport that only counts): "
            f"`transport.write` {wc['transport_write']:.0f} ns, `HttpSession.write` "
            f"{wc['httpsession_write']:.0f} ns, so **{wc['layer']:.0f} ns more per write**. "
            "Times the writes per second each step made (from chatd's `/stats` "
            "`writes_out`), that is the server CPU the layer adds; once the server is "
            "CPU-bound (from 100 msg/s on in this room) it comes out of the latency:",
            "",
            f"_{caption}_",
            "",
            "| dialect | msg/s | deliveries per write (WS) | writes/s (WS) "
            "| CPU the layer adds | server CPU used (WS) |",
            "|---|---:|---:|---:|---:|---:|",
            *layer_rows,
            "",
        ]
    lines += [
        f"## RSS per idle connection (rooms of {m.idle_room})",
        "",
        "Registered clients doing nothing, in rooms of 100 (as `bench`'s idle scenario and "
        "`bench.tls_idle`): (server RSS with N clients - RSS before the first) / N. One "
        "server per target grows through the counts. The WebSocket layer's share is the "
        "difference with the TCP twin: an `HttpSession` (the bridge between the engine's "
        "transport and the dialect session), its `FrameReader`, and what the HTTP "
        "handshake leaves behind in the allocator. The *marginal* columns divide the RSS "
        "added between two counts by the connections added, on the same server: the "
        "listener's fixed costs (the HTTP listener keeps the page's files in memory from "
        "its first request on) cancel out there, so at small N they explain the gap "
        "between the two.",
        "",
        f"_{caption}_",
        "",
        "| dialect | connections | TCP B/conn | WebSocket B/conn | WebSocket layer B/conn "
        "| TCP marginal B/conn | WebSocket marginal B/conn |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *_idle_rows(doc, m),
        "",
    ]
    if "idle" in doc.get("plots", {}):
        lines += [f"![RSS per idle connection]({doc['plots']['idle']})", ""]
    costs = doc.get("receive_ns_per_message") or {}
    if costs:
        lines += [
            "## The load generator's receive path",
            "",
            "Nanoseconds per message to read 57-byte relayed lines in 64 KiB reads, in "
            "the load generator's process (pinned to its CPU, best of 5, garbage "
            "collector off): why `loadtest/chatload/ws.py` reads frames with a small loop of "
            "its own instead of wsproto's `Connection` (which builds a frame, an event and "
            "a decoded `str` per message), and why the lean driver counts a byte.",
            "",
            f"_{caption}_",
            "",
            "| how | ns/message |",
            "|---|---:|",
            *[f"| {text} | {costs[key]:,.0f} |" for key, text in RECEIVE_ROWS if key in costs],
            "",
        ]
    lines += [
        "## Method",
        "",
        "- Server on CPU 0, load generator (this process: `bench.driver`'s one-epoll "
        "driver) on CPU 1, both pinned; the 2 cores are shared, and loopback's softirq "
        "work lands on both.",
        "- Over WebSocket each client does wsproto's opening handshake "
        "(`loadtest/chatload/ws.py`), then registers and joins; senders write one masked "
        "frame per message. Receivers count one byte per delivery, the first byte of a "
        "whole text frame (`0x81`) instead of a newline: exact for ASCII payloads in frames "
        "under 126 bytes, and checked in every step: each timed receiver also parses "
        "every frame, and a step where the two counts differ anywhere is invalid.",
        "- Latency: arrival minus the message's *intended* send time (coordinated "
        "omission), at up to 100 timed receivers (fewer at high rates: the driver parses "
        "at most 40,000 stamped lines a second); a delivery still missing 2 s after the "
        "window counts at 2 s.",
        "- Server CPU per delivery: the server's CPU time over the window / deliveries "
        "counted at the members. RSS from `/proc/PID/status`.",
        '- Validity: `bench/README.md` ("Validity"); a step whose load generator used '
        ">= 90 % of its CPU, sent < 95 % of the offered rate, saw a loss, or ran on a "
        "contended CPU is invalid and ends the walk there.",
        "",
    ]
    invalid = report._invalid_list(cs)  # noqa: SLF001
    if invalid:
        lines += ["## Invalid runs", "", *invalid, ""]
    if doc.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in doc["notes"]], ""]
    lines += ["## Versions and command lines", ""]
    tree = doc.get("server_tree") or {}
    if tree:
        changed = ", with uncommitted changes in server/" if tree.get("server_changed") else ""
        lines.append(
            f"chatd from commit {tree.get('commit') or '?'}{changed} (sha256 of "
            f"server/chatd's Python files {tree.get('server_sha256')}), copied at the start "
            "so that every server of the run ran the same code."
        )
        lines.append("")
    for t, v in (doc.get("versions") or {}).items():
        argv = " ".join((doc.get("argv") or {}).get(t, []))
        lines.append(f"- `{t}`: {v or '?'}; `python {argv}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
