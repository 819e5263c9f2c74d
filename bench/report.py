"""report.md: the human-readable side of results.json.

Every table says which tool measured it and repeats the machine caption; invalid runs
are listed with their reasons under the table they would have entered.
"""

from __future__ import annotations

from typing import Any

from bench import aggregate, saturation_report, storm
from bench.matrix import SCENARIO_TITLES, Matrix
from bench.plots import ORDER
from bench.textfmt import fmt

__all__ = ["fmt", "render", "goals_table", "headline"]


def cell_text(c: dict[str, Any] | None, metric: str, unit: str = "") -> str:
    """'median [min–max] (valid/runs)' or a dash, marking cells with invalid runs."""
    if c is None:
        return "–"
    m = c["metrics"].get(metric)
    tag = f" ({c['n_valid']}/{c['n_runs']})" if c["n_valid"] != c["n_runs"] else ""
    if not m:
        return f"invalid{tag}" if c["n_valid"] == 0 else "–"
    late = c["metrics"].get("missing")
    ge = "≥" if metric.startswith("latency_") and late and late["max"] > 0 else ""
    if m["n"] == 1:
        return f"{ge}{fmt(m['median'], unit)}{tag}"
    return f"{ge}{fmt(m['median'], unit)} [{fmt(m['min'])}–{fmt(m['max'])}]{tag}"


def _targets(cs: list[dict[str, Any]]) -> list[str]:
    present = {c["target"] for c in cs}
    return [t for t in ORDER if t in present]


def _invalid_list(cs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for c in cs:
        for inv in c["invalid"]:
            p = ", ".join(f"{k}={v}" for k, v in c["params"].items())
            lines.append(
                f"- {c['target']} ({c['tool']}, {p}, rep {inv['rep']}): {'; '.join(inv['reasons'])}"
            )
    return lines


def _goal_line(g: dict[str, Any]) -> str:
    met = {
        True: "**met**",
        False: "**not met**",
        None: "not judged (a side missing, or only bounded)",
    }
    meas = ", ".join(f"{k} {v if isinstance(v, str) else fmt(v)}" for k, v in g["measured"].items())
    return f"| {g['goal']} | {meas} | {met[g['met']]} |"


def headline(cs: list[dict[str, Any]], m: Matrix) -> list[str]:
    """One row per target: the figure each scenario is about, median [range]."""
    d = m.fanout_deliveries[m.fanout_locust_at]
    big = max(m.fanout_rooms) if m.fanout_rooms else 0
    k = max(m.idle_counts) if m.idle_counts else 0
    n = m.senders_room
    rows = [
        (
            f"| target | flood deliveries/s, N={m.flood_room} | fan-out p99 ms, N={big} at "
            f"{fmt(d)}/s (driver) | {m.senders}-sender p99 ms, N={n} (Locust) | p99 ms with "
            f"a slow reader, N={n} (driver; without it) | RSS per idle conn at {k} |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for t in _targets(cs):
        flood = aggregate.find(cs, "flood", t, room=m.flood_room)
        fan = aggregate.find(cs, "fanout", t, "driver", room=big, offered=d)
        snd = aggregate.find(cs, "senders", t, "locust", room=n)
        slow = aggregate.find(cs, "slow", t, "driver", slow_reader=True)
        calm = aggregate.find(cs, "slow", t, "driver", slow_reader=False)
        idle = aggregate.find(cs, "idle", t, connections=k)
        slow_txt = cell_text(slow, "latency_p99_ms")
        if calm is not None:
            slow_txt += f" ({cell_text(calm, 'latency_p99_ms')})"
        rows.append(
            f"| {t} | {cell_text(flood, 'deliveries_per_s')} | "
            f"{cell_text(fan, 'latency_p99_ms')} | {cell_text(snd, 'latency_p99_ms')} | "
            f"{slow_txt} | {cell_text(idle, 'rss_per_conn_bytes', ' B')} |"
        )
    return rows


def goals_table(doc: dict[str, Any], ids: tuple[str, ...] | None = None) -> list[str]:
    """The goals (those with the given ids, in doc order) as a markdown table."""
    gs = [g for g in doc["goals"] if ids is None or g["id"] in ids]
    if not gs:
        return []
    return [
        "| goal | measured (medians) | verdict |",
        "|---|---|---|",
        *[_goal_line(g) for g in gs],
    ]


#: Issue 4's goal ids (the scenarios 1-5).
ISSUE4_GOALS = tuple(g for g in aggregate.GOAL_IDS if g not in aggregate.KNEE_GOAL_IDS)


def render(doc: dict[str, Any], plots: dict[str, str]) -> str:
    """The whole report.md text for one results.json document."""
    m: Matrix = doc["_matrix"]
    cs = doc["cells"]
    caption = doc["caption"]
    out: list[str] = []
    mach = doc["machine"]
    out += [
        f"# chatd benchmark — {doc['label']} ({doc['created']})",
        "",
        (
            f"**Machine:** {caption}. {mach['cpu_model']}, {mach['cpus_usable']} usable CPUs, "
            f"{mach['memory_bytes'] / 2**30:.0f} GiB, {mach['kernel']}, Python {doc['python']}."
        ),
        (
            f"Pinning: {doc['pinning']}. Mean steal time over all windows: "
            f"{doc['steal_mean'] * 100:.2f} %."
        ),
        "",
        (
            f"**Regenerate:** `{doc['command']}` (from the repository root; "
            f"took {doc['duration_s'] / 60:.1f} min)."
        ),
        "",
    ]
    if m.quick:
        out += [
            (
                "> **Quick mode:** a smoke test of the harness (one repetition, small rooms). "
                "These figures are not results."
            ),
            "",
        ]
    out += [
        (
            "Figures are median [min–max] over valid repetitions; `(v/n)` marks cells where only "
            "v of n runs were valid. A run is invalid when its load generator saturated (>= 90 % "
            "of a core), sent < 95 % of the offered rate, lost or reordered messages, or its "
            "server did not exit cleanly, or when more than half of a pinned CPU went to "
            "other work (a contended machine). Invalid runs are listed, never averaged in. "
            "A latency marked ≥ comes from a cell where some deliveries had still not arrived "
            "when the load generator stopped waiting; they count at that wait (a lower bound)."
        ),
        "",
    ]
    out += issue20_goals(doc)
    knee_goals = goals_table(doc, aggregate.KNEE_GOAL_IDS)
    if knee_goals:
        out += ["## Goals (issue 10: the saturation knee)", "", *knee_goals, ""]
        out += [f"### Knee, room of {m.headline_room}, {m.headline_senders} senders", ""]
        out += [f"_{caption}_", "", *saturation_report.headline_rows(doc), ""]
    from bench import history_report  # it uses this module's tables

    out += history_report.section(doc)
    out += [
        "## Goals (issue 4)",
        "",
        *goals_table(doc, ISSUE4_GOALS),
        "",
        "## Headline of scenarios 1-5",
        "",
        f"_{caption}_",
        "",
        *headline(cs, m),
        "",
        "## Which tool measured what",
        "",
        "| scenario | tool |",
        "|---|---|",
        "| 0. saturation sweep, every target (chatd, Redis, IRC daemons) | lean driver |",
        "| 1. paced fan-out, rate sweep, every target | lean driver (bench/driver.py) |",
        (
            "| 1. paced fan-out, one rate in rooms of "
            f"{', '.join(map(str, m.fanout_locust_rooms))}, chatd engines | Locust |"
        ),
        "| 2. flood | lean driver |",
        "| 3. many senders | Locust (`loadtest/chat.py`; IRC targets with --chat-dialect irc) |",
        "| 4. slow consumer (with and without) | lean driver |",
        "| 5. idle connections | lean driver |",
        "| 6. Redis anchor (0, 1 and 2) | lean driver, same code path as chatd |",
        "| 7. join and quit storm, chatd with its default options | lean driver (bench/storm.py) |",
        "",
        (
            "The lean driver speaks chatd's line protocol to chatd's engines, RESP to Redis "
            "and IRC (NICK/USER, JOIN, PRIVMSG, PING answered) to chatd's IRC listener, "
            "ngircd and InspIRCd: the same pacing, stamps and counting code for all."
        ),
        "",
    ]
    out += saturation_report.section(doc, plots)
    out += _fanout_section(cs, m, caption, plots)
    out += _flood_section(cs, m, caption, plots)
    out += _senders_section(cs, m, caption, plots)
    out += _idle_section(cs, m, caption, plots)
    out += storm_section(cs, m, caption)
    inv = _invalid_list(cs)
    out += ["## Invalid runs", ""] + (inv or ["None."]) + [""]
    out += saturation_report.versions_section(doc)
    out += _method_section(m)
    return "\n".join(out) + "\n"


def _fanout_section(
    cs: list[dict[str, Any]], m: Matrix, caption: str, plots: dict[str, str]
) -> list[str]:
    fan = [c for c in cs if c["scenario"] == "fanout"]
    if not fan:
        return []
    out = [f"## {SCENARIO_TITLES['fanout']} (scenario 6: with Redis)", "", f"_{caption}_", ""]
    if "fanout" in plots:
        out += [f"![fan-out]({plots['fanout']})", ""]
    for tool in ("driver", "locust"):
        sel = [c for c in fan if c["tool"] == tool]
        if not sel:
            continue
        out += [f"### measured by {'the lean driver' if tool == 'driver' else 'Locust'}", ""]
        out += [
            (
                "| target | room | offered deliv/s | achieved deliv/s | p50 ms | p90 ms | p99 ms "
                "| p99.9 ms | max ms | server CPU |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for room in sorted({c["params"]["room"] for c in sel}):
            for off in sorted({c["params"].get("offered", 0) for c in sel}):
                for t in _targets(sel):
                    c = aggregate.find(sel, "fanout", t, tool, room=room, offered=off)
                    if c is None:
                        continue
                    out.append(
                        f"| {t} | {room} | {fmt(off)} | {cell_text(c, 'deliveries_per_s')} | "
                        + " | ".join(
                            cell_text(c, f"latency_{k}_ms")
                            for k in ("p50", "p90", "p99", "p999", "max")
                        )
                        + f" | {_res(c, 'server_cpu_util')} |"
                    )
        out.append("")
    return out


def _res(c: dict[str, Any], key: str) -> str:
    r = c["resources"].get(key)
    return f"{r['median'] * 100:.0f} %" if r else "–"


def _flood_section(
    cs: list[dict[str, Any]], m: Matrix, caption: str, plots: dict[str, str]
) -> list[str]:
    sel = [c for c in cs if c["scenario"] == "flood"]
    if not sel:
        return []
    out = [
        f"## {SCENARIO_TITLES['flood']} (room of {m.flood_room}, lean driver)",
        "",
        f"_{caption}_",
        "",
    ]
    if "flood" in plots:
        out += [f"![flood]({plots['flood']})", ""]
    out += [
        (
            "| target | deliveries/s | messages/s | deliveries per server CPU-s | server CPU "
            "| driver CPU | CPU busy (server's / driver's) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for t in _targets(sel):
        c = aggregate.find(sel, "flood", t)
        out.append(
            f"| {t} | {cell_text(c, 'deliveries_per_s')} | {cell_text(c, 'messages_per_s')} | "
            f"{cell_text(c, 'deliveries_per_server_cpu_s')} | {_res(c, 'server_cpu_util')} | "
            f"{_res(c, 'loadgen_cpu_util')} | {_busy(c)} |"
        )
    out += [
        "",
        "Server and driver CPU are the processes' own (utime+stime) as a share of one core; "
        "CPU busy is the whole CPU from /proc/stat, which adds loopback softirq work and "
        "anything else that ran there.",
        "",
        "Messages/s counts what the sender wrote during the window. The sender writes in "
        "64 KiB blocks (about 1,300 lines), so against a server that delivers fewer than "
        "that per member in a window, the block written during the warm-up lasts the whole "
        "window and the column shows 0; deliveries/s, counted at the members, is still the "
        "server's rate, and the exact-count check after the drain still applies.",
    ]
    return out + [""]


def _busy(c: dict[str, Any] | None) -> str:
    """'a % / b %' for the CPUs the run used, in pinning order (server's first)."""
    if c is None:
        return "–"
    vals = [v for k, v in sorted(c["resources"].items()) if k.startswith("busy_cpu")]
    return " / ".join(f"{v['median'] * 100:.0f} %" for v in vals) or "–"


def _senders_section(
    cs: list[dict[str, Any]], m: Matrix, caption: str, plots: dict[str, str]
) -> list[str]:
    sel = [c for c in cs if c["scenario"] in ("senders", "slow")]
    if not sel:
        return []
    out = [
        f"## {SCENARIO_TITLES['senders']} (Locust) and {SCENARIO_TITLES['slow']} (lean driver)",
        "",
        (
            f"{m.senders} senders x {m.sender_rate:g} msg/s into a room of {m.senders_room}, "
            f"{m.senders_payload}-byte messages. Scenario 4 runs the same traffic through the "
            "lean driver twice on one server: as is, then with one extra member that "
            f"registered and stopped reading (SO_RCVBUF {m.slow_rcvbuf} B, so the server feels "
            "it within seconds instead of after the several MiB loopback buffers would absorb)."
        ),
        "",
        f"_{caption}_",
        "",
    ]
    if "senders" in plots:
        out += [f"![senders]({plots['senders']})", ""]
    out += [
        (
            "| target | scenario | tool | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
            "| deliveries/s | server CPU | load-gen CPU |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = (
        ("senders", "locust", {}, f"{m.senders} senders"),
        ("slow", "driver", {"slow_reader": False}, "without slow reader"),
        ("slow", "driver", {"slow_reader": True}, "with slow reader"),
    )
    for t in _targets(sel):
        for scen, tool, params, label in rows:
            c = aggregate.find(sel, scen, t, tool, **params)
            if c is None:
                continue
            out.append(
                f"| {t} | {label} | {tool} | "
                + " | ".join(
                    cell_text(c, f"latency_{k}_ms") for k in ("p50", "p90", "p99", "p999", "max")
                )
                + f" | {cell_text(c, 'deliveries_per_s')} | {_res(c, 'server_cpu_util')} "
                f"| {_res(c, 'loadgen_cpu_util')} |"
            )
    return out + [""]


def _idle_section(
    cs: list[dict[str, Any]], m: Matrix, caption: str, plots: dict[str, str]
) -> list[str]:
    sel = [c for c in cs if c["scenario"] == "idle"]
    if not sel:
        return []
    counts = sorted({c["params"]["connections"] for c in sel})
    out = [
        f"## {SCENARIO_TITLES['idle']} (lean driver)",
        "",
        (
            f"Registered clients, {m.idle_room} per room, doing nothing; server RSS growth over "
            "its RSS before the first connection, divided by the connections."
        ),
        "",
        f"_{caption}_",
        "",
    ]
    if "idle" in plots:
        out += [f"![idle]({plots['idle']})", ""]
    out += [
        "| target | " + " | ".join(f"{n} conns: bytes/conn" for n in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for t in _targets(sel):
        row = [
            cell_text(aggregate.find(sel, "idle", t, connections=n), "rss_per_conn_bytes")
            for n in counts
        ]
        out.append(f"| {t} | " + " | ".join(row) + " |")
    return out + [""]


def issue20_goals(doc: dict[str, Any]) -> list[str]:
    """Issue 20's goals (fan-out per loop turn), each met or missed by how much, with the
    mechanism from this run's counters ([] when the run judged none of them)."""
    table = goals_table(doc, storm.GOAL_IDS)
    if not table:
        return []
    return [
        "## Goals (issue 20: fan-out per loop turn)",
        "",
        *table,
        "",
        (
            "The knees are the headline sweep's (section 0, where the load generator's CPU "
            "stands beside every knee); *events per batch* is chatd's `/stats` "
            "`fanout_events` over `fanout_batches` across the knee steps (or the storm): "
            "how many events one append per member carried, 1 when every event is a "
            "fan-out of its own, '–' when chatd has no such counters. The storm is "
            "section 7, idle memory section 5. *No regression elsewhere*: issue 4's goals "
            "and the tables of scenarios 1-5 below (idle line connections, the slow reader, "
            "the flood) stand as in earlier reports."
        ),
        "",
    ]


def storm_section(cs: list[dict[str, Any]], m: Matrix, caption: str) -> list[str]:
    """Section 7: the join and quit storm per engine ([] when the run had none)."""
    sel = [c for c in cs if c["scenario"] == "storm"]
    if not sel:
        return []
    n = sel[0]["params"].get("connections")
    return [
        f"## {SCENARIO_TITLES['storm']} (issue 20; lean driver, bench/storm.py)",
        "",
        (
            f"chatd with its **default options** (flood control, per-address limits with "
            f"loopback exempt, --max-clients 10000, history on). {m.storm_probes} probe "
            f"members sit in `#lobby` and time `/ping` round trips, one every "
            f"{m.storm_probe_interval_s * 1000:g} ms in turn. Then {n} line-protocol "
            "connections from loopback open at once and send their nick lines as soon as "
            "they are connected (reading and discarding all they receive), until every one "
            "was greeted, every probe saw every join and the storm's connections went "
            f"quiet; then all send `/quit` at once, until the server closed them all and "
            f"every probe saw every quit (each storm at most {m.storm_wait_s:g} s). A "
            "storm's worst round trip is over the pings sent during it; an unanswered one "
            f"counts as waiting until the end. Goal (reactor): < {storm.GOAL_MS:g} ms."
        ),
        "",
        f"_{caption}_",
        "",
        *storm_rows(sel),
        "",
        (
            "Join storm s: from the first connect until the storm's connections went quiet "
            "(the server had delivered every join notice); the accept queue holds 1,024, so "
            "connections beyond it wait for the kernel's SYN retry (1 s, then 3 s). Quit "
            "storm s: from the `/quit`s until the server had closed every connection and "
            "every probe had seen every quit. writes_out: chatd's queued writes to members "
            "in the storm. Probe lag: how late the probes' thread sent a ping at worst (the "
            "load generator's own delay, which can only lengthen a round trip). Server CPU "
            "is the server process's over each storm, load-gen CPU the driver's over both."
        ),
        "",
    ]


def _pair(c: dict[str, Any], a: str, b: str, pct: bool = False) -> str:
    """'a / b' of two medians of a cell (as percentages with pct)."""
    vals = (aggregate.median_of(c, a), aggregate.median_of(c, b))
    if pct:
        return " / ".join(f"{v * 100:.0f} %" if v is not None else "–" for v in vals)
    return " / ".join(fmt(v) for v in vals)


def storm_rows(cs: list[dict[str, Any]]) -> list[str]:
    """The storm's table: one row per engine (also the README's)."""
    sel = [c for c in cs if c["scenario"] == "storm"]
    if not sel:
        return []
    out = [
        (
            "| target | registered | idle round trip ms | join storm s | join: worst ms "
            "| join: p99 ms | quit storm s | quit: worst ms | quit: p99 ms "
            "| events per batch (join / quit) | writes_out (join / quit) "
            "| server CPU (join / quit) | load-gen CPU | probe lag ms |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in _targets(sel):
        c = aggregate.find(sel, "storm", t)
        if c is None:
            continue

        out.append(
            f"| {t} | {cell_text(c, 'registered')} | {cell_text(c, 'rtt_idle_ms')} | "
            f"{cell_text(c, 'join_s')} | {cell_text(c, 'rtt_join_worst_ms')} | "
            f"{cell_text(c, 'rtt_join_p99_ms')} | {cell_text(c, 'quit_s')} | "
            f"{cell_text(c, 'rtt_quit_worst_ms')} | {cell_text(c, 'rtt_quit_p99_ms')} | "
            f"{_pair(c, 'join_events_per_batch', 'quit_events_per_batch')} | "
            f"{_pair(c, 'join_writes_out', 'quit_writes_out')} | "
            f"{_pair(c, 'join_server_cpu_util', 'quit_server_cpu_util', pct=True)} | "
            f"{_res(c, 'loadgen_cpu_util')} | {cell_text(c, 'probe_lag_max_ms')} |"
        )
    return out


def _method_section(m: Matrix) -> list[str]:
    return [
        "## Method",
        "",
        (
            "- Every server is its own subprocess on a free loopback port, pinned to one CPU; "
            "the load generator (this process, or Locust) is pinned to the other. Server CPU "
            "seconds come from /proc/PID/stat (utime+stime, all threads), RSS from "
            "/proc/PID/status, steal from /proc/stat, all sampled at the measurement window's "
            "edges. chatd runs with `--flood-rate 0` (no per-client throttle) where it has it."
        ),
        (
            "- A delivery is one message arriving at one room member; a message to a room of N "
            "is N-1 deliveries (the sender does not get it back). Redis: N-1 subscribers and "
            "a separate publisher connection."
        ),
        (
            f"- Paced fan-out (driver): one sender sends on a fixed schedule; each message carries "
            f"its *intended* send time, and latency = arrival - intended at up to "
            f"{m.timed_members} members spread over the room (coordinated omission is counted, "
            f"not hidden). {m.warmup_s:g} s warm-up, {m.window_s:g} s window, then up to 2 s for "
            "messages still in flight; one that never arrives makes the run invalid."
        ),
        (
            "- Flood (driver): one sender writes 64 KiB blocks of identical lines, never more "
            f"than {m.flood_inflight // 1024} KiB of frames (nor 0.25 s of the recent delivery "
            "rate) ahead of the slowest member, so no server's output limit is reached. "
            "Members read with MSG_TRUNC (the kernel discards the bytes without copying) and "
            "deliveries are bytes / frame length; 10 checker members count newlines, and "
            "after the drain every member must hold exactly sent x frame bytes. Every chatd "
            "engine batches the lines of one read into one event, so the flood compares "
            "what the I/O models do with those batches."
        ),
        (
            "- Saturation (driver): see its section. Timed receivers parse stamps; at most "
            f"{m.saturation_parse_budget:,.0f} stamped lines per second are parsed (fewer "
            "timed receivers at high rates, 5 at least), so the driver stays ahead of the "
            "server; every receiver counts its lines. Senders are room members (chatd, IRC) "
            "and also receive the other senders' messages; Redis publishers are separate "
            "connections, beside N-1 subscribers."
        ),
        (
            "- Locust (loadtest/chat.py, headless, one process): latency from its HDR histogram "
            "(microseconds); achieved send rate = offered x sent / intended; saturated as Locust's "
            "JSON says. Steady state only: the senders start once every user has joined its "
            f"room and {m.locust_warmup_s:g} s more have passed (loadtest's start gate), and "
            f"Locust measures {m.locust_window_s:g} s from there, so neither the spawn ramp nor "
            "the server's join storm is in its figures; server CPU is taken over the same "
            "window. The time each engine took to fill the room is `fill_s` in results.json."
        ),
        (
            "- Idle: clients register and `/join` rooms of "
            f"{m.idle_room}, so that setting up 10,000 does not cost 50 million join notices."
        ),
        (
            "- Join and quit storm: chatd with its default options, not the bench's "
            "(no --flood-rate 0, no --max-clients), so the storm meets the limits users get; "
            "the driver reads the storm's connections with MSG_TRUNC after their greeting "
            "and times the probes in a thread of its own."
        ),
    ]
