"""report.md, results.json and the plot of ``python -m bench.cluster``.

Every figure comes from the run's records (``results.json``); ``--rerender DIR`` rebuilds
the markdown and the PNG from that file alone. The machine caption goes beside every
table and into the plot's title: the figures come from 2 shared cores.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from bench.cluster import MAX_FOREIGN_BUSY as MAX_FOREIGN
from bench.cluster import PARSE_BUDGET
from bench.stats import SATURATION_CPU as SATURATED
from bench.textfmt import fmt

PLOT = "cluster.png"
#: Load-generator CPU share from which a step's latency is said to include its delays.
LOADGEN_NEAR = 0.8
COLORS = {"baseline": "#666666", "1": "#1b9e77", "2": "#d95f02", "4": "#7570b3"}


def _m(s: dict[str, float] | None, digits: int = 1, unit: str = "") -> str:
    """median [min–max] of a spread, or – ."""
    if not s:
        return "–"
    med, lo, hi = s["median"], s["min"], s["max"]
    if digits < 0:
        body = f"{fmt(med)}{unit}"
        return body if lo == hi else f"{body} [{fmt(lo)}–{fmt(hi)}]"
    body = f"{med:.{digits}f}{unit}"
    return body if lo == hi else f"{body} [{lo:.{digits}f}–{hi:.{digits}f}]"


def _pct(s: dict[str, float] | None) -> str:
    """A CPU share as a percentage of one core: median [min–max]."""
    if not s:
        return "–"
    med, lo, hi = (round(s[k] * 100) for k in ("median", "min", "max"))
    return f"{med} %" if lo == hi else f"{med} % [{lo}–{hi}]"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _sum(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("summary") or {}


def _valid_note(s: dict[str, Any]) -> str:
    n, v = s.get("n_runs", 0), s.get("n_valid", 0)
    return "" if n == v else f" ({v}/{n} valid)"


def fixed_table(doc: dict[str, Any]) -> list[str]:
    """The must-have: latency, deliveries, CPU and loss per configuration at one rate."""
    out = [
        "| configuration | p50 / p99 ms, every sample | same node p50 / p99 ms | "
        "cross node p50 / p99 ms | samples same + cross | deliveries/s (per node) | "
        "CPU per chatd node | redis-server CPU | all servers: CPU, µs per delivery | "
        "load-gen CPU | other work on CPU 0 / CPU 1 | deliveries missing / owed | "
        "cluster_gaps / gaps_lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["configs"]:
        s = _sum(c)
        if not s.get("n_valid"):
            reasons = sorted({why for r in c["runs"] for why in r["reasons"]} | set(c["problems"]))
            out.append(
                f"| {c['label']} | no valid window: {'; '.join(reasons)[:300] or 'none ran'} "
                "| | | | | | | | | | | |"
            )
            continue
        per_node = " / ".join(_m(x, -1) for x in s["deliveries_per_s_by_node"])
        total = _m(s["deliveries_per_s"], -1)
        deliveries = total if c["nodes"] == 1 else f"{total} ({per_node})"
        cpu_nodes = " / ".join(_pct(x) for x in s["cpu_nodes"])
        samples = (
            f"{fmt(s['same_samples']['median']) if s['same_samples'] else '–'} + "
            f"{fmt(s['cross_samples']['median']) if s['cross_samples'] else '0'}"
        )
        out.append(
            f"| {c['label']}{_valid_note(s)} | {_m(s['all_p50_ms'])} / {_m(s['all_p99_ms'])} | "
            f"{_m(s['same_p50_ms'])} / {_m(s['same_p99_ms'])} | "
            f"{_m(s['cross_p50_ms'])} / {_m(s['cross_p99_ms'])} | {samples} | {deliveries} | "
            f"{cpu_nodes} | {_pct(s['cpu_redis']) if c['redis'] else 'none'} | "
            f"{_pct(s['cpu_servers_total'])}, {_m(s['cpu_servers_us_per_delivery'], 2)} | "
            f"{_pct(s['cpu_loadgen'])} | "
            f"{_pct(s.get('foreign_server_cpu'))} / {_pct(s.get('foreign_loadgen_cpu'))} | "
            f"{s['deliveries_missing']} / {fmt(s['deliveries_owed'])} | "
            f"{s['cluster_gaps']} / {s['cluster_gaps_lost']} |"
        )
    return out


def sweep_table(doc: dict[str, Any]) -> list[str]:
    """Per configuration: the knee and p99 (cross node where there is one) at each rate."""
    rates = sorted({r["params"]["offered"] for c in doc["configs"] for r in c["sweep"]})
    if not rates:
        return []
    knee_ms = doc["plan"]["knee_ms"]
    out = [
        f"| configuration | knee msg/s (p99 <= {knee_ms:g} ms, nothing lost) | what ended the "
        "walk | " + " | ".join(f"{fmt(r)}/s" for r in rates) + " |",
        "|---|---|---|" + "---|" * len(rates),
    ]
    for c in doc["configs"]:
        last: dict[float, dict[str, Any]] = {}
        for r in c["sweep"]:
            last[r["params"]["offered"]] = r
        cells = []
        for rate in rates:
            r = last.get(rate)
            if r is None:
                cells.append("")
                continue
            m, cpu = r["metrics"], r["cpu"]
            if m["cross_p99_ms"] is not None:
                text = f"p99 same {_ms(m['same_p99_ms'])} / cross {_ms(m['cross_p99_ms'])} ms"
            else:
                text = f"p99 {_ms(m['same_p99_ms'])} ms"
            text += f", servers {cpu['servers_total'] * 100:.0f} %, load gen "
            text += f"{cpu['loadgen'] * 100:.0f} %"
            if m["deliveries_missing"]:
                text += f", {m['deliveries_missing']} missing"
            if r["counters"]["cluster_gaps"]:
                text += f", gaps {r['counters']['cluster_gaps']}"
                text += f"/{r['counters']['cluster_gaps_lost']} lost"
            if not r["valid"]:
                text += " **invalid**: " + "; ".join(r["reasons"])[:160]
            cells.append(text)
        k = c.get("knee") or {}
        rate = k.get("rate")
        knee = "–" if rate is None else ("≥" if k.get("lower_bound") else "") + fmt(rate)
        out.append(
            f"| {c['label']} | {knee} | {_ended(k) if k else '–'} | " + " | ".join(cells) + " |"
        )
    return out


def _ended(k: dict[str, Any]) -> str:
    """What ended a walk, said once: "p99 118 ms at 6400/s", "top of sweep: ..."."""
    limit, detail = str(k.get("limit", "")), str(k.get("detail", ""))
    return detail if limit in detail else f"{limit}: {detail}"


def _get(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    for c in doc["configs"]:
        if c["config"] == key:
            return _sum(c)
    return None


def _med(s: dict[str, Any] | None, key: str) -> float | None:
    if not s or not s.get(key):
        return None
    return float(s[key]["median"])


def findings(doc: dict[str, Any]) -> list[str]:
    """Latency at the fixed rate, each figure read from the summary (None-safe)."""
    base, one = _get(doc, "baseline"), _get(doc, "1")
    out: list[str] = []
    b50, b99 = _med(base, "all_p50_ms"), _med(base, "all_p99_ms")
    if b50 is not None and b99 is not None:
        out.append(f"one node without Redis delivers at p50 {b50:.1f} ms, p99 {b99:.1f} ms")
    o50, o99 = _med(one, "all_p50_ms"), _med(one, "all_p99_ms")
    if o50 is not None and o99 is not None:
        out.append(
            f"the same node with `--redis` at p50 {o50:.1f} ms, p99 {o99:.1f} ms (its own "
            "members still get its lines before the publish)"
        )
    for key in ("2", "4"):
        sm = _get(doc, key)
        c50, c99 = _med(sm, "cross_p50_ms"), _med(sm, "cross_p99_ms")
        s50, s99 = _med(sm, "same_p50_ms"), _med(sm, "same_p99_ms")
        if c50 is None or c99 is None or s50 is None or s99 is None:
            continue
        out.append(
            f"with {key} nodes a line that crosses nodes arrives at p50 {c50:.1f} ms, p99 "
            f"{c99:.1f} ms, one to its sender's own node at p50 {s50:.1f} ms, p99 {s99:.1f} ms"
        )
    return out


def cpu_findings(doc: dict[str, Any]) -> list[str]:
    """What the servers' CPU says at the fixed rate, against the baseline."""
    base = _get(doc, "baseline")
    b_cpu = _med(base, "cpu_servers_total")
    b_us = _med(base, "cpu_servers_us_per_delivery")
    out: list[str] = []
    for key in ("1", "2", "4"):
        sm = _get(doc, key)
        cpu, us, redis = (
            _med(sm, "cpu_servers_total"),
            _med(sm, "cpu_servers_us_per_delivery"),
            _med(sm, "cpu_redis"),
        )
        if cpu is None or us is None:
            continue
        text = f"{config_label(doc, key)}: {cpu * 100:.0f} % of the core"
        if redis is not None:
            text += f" (redis-server {redis * 100:.0f} %)"
        text += f", {us:.1f} µs per delivery"
        if b_us:
            text += f" ({us / b_us:.2f}× the baseline's)"
        out.append(text)
    if not out or b_cpu is None or b_us is None:
        return []
    return [
        f"The same deliveries cost the servers more CPU through Redis: the baseline node "
        f"used {b_cpu * 100:.0f} % of its core ({b_us:.1f} µs per delivery); "
        + "; ".join(out)
        + ". Why, from the code (this run does not break the CPU down): every node decodes "
        "and applies every other node's lines and publishes its own through a script, so "
        "the per-message work is paid once per node, while the per-member work is only "
        "split among them; and each line wakes every node's loop and redis-server on the "
        "one core."
    ]


def sweep_findings(doc: dict[str, Any]) -> list[str]:
    """Per configuration: the knee, what ended the walk, and where the core filled up."""
    parts = []
    for c in doc["configs"]:
        k = c.get("knee")
        if not c["sweep"] or not k:
            continue
        last: dict[float, dict[str, Any]] = {}
        for r in c["sweep"]:
            last[r["params"]["offered"]] = r
        full = [
            rate
            for rate, r in sorted(last.items())
            if r["valid"] and r["cpu"]["servers_total"] >= 0.9
        ]
        rate = k.get("rate")
        knee = "none" if rate is None else ("≥ " if k["lower_bound"] else "") + fmt(rate)
        text = f"{c['label']}: knee {knee} msg/s ({_ended(k)}"
        after = [r for x, r in sorted(last.items()) if rate is None or x > rate]
        busy = after[0]["cpu"]["loadgen"] if after else 0.0
        if k["limit"] == "p99" and busy >= LOADGEN_NEAR:
            text += (
                f"; the load generator was at {busy * 100:.0f} % of its core in that step, "
                "near its own limit, so part of that p99 may be its own delay"
            )
        text += ")"
        if full:
            text += f", its servers' core at >= 90 % from {fmt(full[0])} msg/s on"
        passed = [
            (x, r)
            for x, r in sorted(last.items())
            if r["valid"] and r["metrics"]["deliveries_per_s"] and (rate is None or x <= rate)
        ]
        if len(passed) >= 2:
            (lo, a), (hi, b) = passed[0], passed[-1]
            text += (
                f"; from {fmt(lo)} to {fmt(hi)} msg/s the servers' CPU per delivery went from "
                f"{_us(a):.2f} to {_us(b):.2f} µs"
            )
            wa, wb = _per_write(a), _per_write(b)
            if wa and wb:
                text += f" and the lines per write to a member from {wa:.1f} to {wb:.1f}"
        parts.append(text)
    if not parts:
        return []
    return [
        "**Where it stops keeping up.** "
        + "; ".join(parts)
        + ". Once the core is full, the servers keep up by spending less CPU per delivery "
        "as the rate rises, because each write to a member carries more lines (lines per "
        "write: the deliveries counted at the members over the nodes' `writes_out`), so the "
        "rate can double several times more before p99 passes the bound; each step's p99 "
        "is in the table above."
    ]


def _us(r: dict[str, Any]) -> float:
    """The servers' CPU per delivery in a step, µs."""
    return float(r["cpu"]["servers_total"] / r["metrics"]["deliveries_per_s"] * 1e6)


def _per_write(r: dict[str, Any]) -> float | None:
    """Lines per write to a member in a step: deliveries counted at the members over the
    nodes' ``writes_out`` (one per batch queued to one member) for the whole step."""
    writes = sum(d.get("writes_out", 0) for d in r.get("counters_by_node") or [])
    return r["metrics"]["deliveries_received"] / writes if writes else None


def config_label(doc: dict[str, Any], key: str) -> str:
    for c in doc["configs"]:
        if c["config"] == key:
            return str(c["label"])
    return key


def loss_findings(doc: dict[str, Any]) -> list[str]:
    """Loss at the fixed rate and in the sweep, from the members and the nodes' counters."""
    fixed = [r for c in doc["configs"] for r in c["runs"]]
    sweep = [r for c in doc["configs"] for r in c["sweep"]]
    if not fixed:
        return []

    def totals(rs: list[dict[str, Any]]) -> tuple[int, int, int, int, int]:
        return (
            sum(r["metrics"]["deliveries_missing"] for r in rs),
            sum(r["metrics"]["deliveries_owed"] for r in rs),
            sum(r["metrics"]["lost"] + r["metrics"]["reordered"] for r in rs),
            sum(r["counters"]["cluster_gaps"] for r in rs),
            sum(r["counters"]["cluster_gaps_lost"] for r in rs),
        )

    miss, owed, lost, gaps, gaps_lost = totals(fixed)
    text = (
        f"At the fixed rate {miss} of {fmt(owed)} owed deliveries were missing over every "
        f"window of every configuration, {lost} lost or reordered at the timed receivers, "
        f"and the nodes counted {gaps} gaps ({gaps_lost} not repairable)."
    )
    if sweep:
        miss, owed, lost, gaps, gaps_lost = totals(sweep)
        text += (
            f" In the rate-doubling walks: {miss} of {fmt(owed)} missing, {lost} lost or "
            f"reordered, {gaps} gaps ({gaps_lost} not repairable)."
        )
    return [text]


def loadgen_findings(doc: dict[str, Any]) -> list[str]:
    """How close the load generator came to its own limit, and what it bounded."""
    fixed = [r for c in doc["configs"] for r in c["runs"] if r["valid"]]
    if not fixed:
        return []
    top = max(r["cpu"]["loadgen"] for r in fixed)
    text = (
        f"The load generator (one process on CPU 1) used at most {top * 100:.0f} % of its "
        "core in the valid fixed-rate windows, so it bounds none of them (the bench calls "
        f"it saturated at {SATURATED * 100:.0f} %)."
    )
    sweep = [r for c in doc["configs"] for r in c["sweep"] if r["metrics"]["messages_sent"]]
    if sweep:
        peak = max(sweep, key=lambda r: r["cpu"]["loadgen"])
        text += (
            f" In the walks it reached {peak['cpu']['loadgen'] * 100:.0f} % "
            f"({config_label(doc, peak['config'])}, {fmt(peak['params']['offered'])} msg/s)"
        )
        ended = [
            f"“{config_label(doc, c['config'])}”"
            for c in doc["configs"]
            if (c.get("knee") or {}).get("limit") == "load generator"
        ]
        text += (
            f"; it ended the walks of {' and '.join(ended)} (saturated, so the step is "
            "invalid), whose knees are then only lower bounds."
            if ended
            else "; no walk was ended by it."
        )
    return [text]


def render(doc: dict[str, Any]) -> str:
    plan, mach = doc["plan"], doc["machine"]
    caption = doc["caption"]
    gib = mach.get("memory_bytes", 0) / 2**30
    versions = doc.get("versions", {})
    lines = [
        f"# chatd cluster: one room over 1, 2 and 4 nodes through Redis ({doc['created']})",
        "",
        f"**Regenerate:** `{doc['command']}` (from the repository root; took "
        f"{doc['duration_s'] / 60:.1f} min; `--rerender DIR` rebuilds this page from "
        "results.json).",
        "",
        f"**Machine:** {caption}. {mach['cpu_model']}, {mach['cpus_usable']} usable CPUs, "
        f"{gib:.0f} GiB, {mach['kernel']}, Python {doc['python']}; "
        f"{versions.get('chatd') or 'chatd'}{_tree(doc)}, "
        f"{' '.join((versions.get('redis') or 'redis-server').split()[:3])}.",
        "",
        f"**Pinning:** {doc['pinning']}. So the 4 nodes share one core with redis-server, "
        "as the single node has it alone: the cluster gets no more CPU than the baseline, "
        "and these figures are the cost of going through Redis, not a scale-out figure.",
        "",
        "## Setup",
        "",
        f"One room (the default room) of **{plan['members']} members**, dealt round-robin "
        f"over the nodes (client g on node g mod n); **{plan['senders']} of them send**, "
        f"the last {plan['senders']} clients, so round-robin spreads them too "
        f"({_senders(doc)}). They send **{fmt(plan['rate'])} messages/s in total** "
        f"({plan['payload']}-byte payloads) on one open-loop schedule, so each message reaches "
        f"{plan['members'] - 1} members: {fmt(plan['rate'] * (plan['members'] - 1))} "
        f"deliveries/s offered. {plan['reps']} window{'s' if plan['reps'] != 1 else ''} of "
        f"{plan['window_s']:g} s per "
        f"configuration, each after {plan['warmup_s']:g} s of warm-up, all on one set of "
        "connections; figures are median [min–max] over the valid windows.",
        "",
        "Every node: `python -m chatd --engine reactor --ephemeral --flood-rate 0` "
        f"(`--redis redis://127.0.0.1:PORT --redis-lease {plan['lease']:g}` in a cluster); "
        "redis-server 7 with `--save '' --appendonly no` and its defaults otherwise. The "
        "load is the lean driver's (`bench/driver.py`, one process, one epoll), not Locust: "
        "it needs a fraction of a core for this load, and its latency is arrival minus the "
        "message's *intended* send time on one clock.",
        "",
        *_why_sizes(doc),
        "",
        f"## Fixed rate: {fmt(plan['rate'])} msg/s into a room of {plan['members']}",
        "",
        f"_{caption}_",
        "",
        *fixed_table(doc),
        "",
        "**Same node**: the sender and the receiver are members of the same node (the "
        "line never waits on Redis); **cross node**: they sit on different nodes (node A "
        "publishes to Redis, which pushes to node B, which delivers). Latency: arrival at "
        "a timed receiver minus the message's intended send time; up to "
        f"{plan['sample']} timed receivers spread evenly over the nodes. **CPU**: "
        "utime+stime from /proc/PID/stat over the window, as a share of one core; **other "
        "work**: the CPU's busy share (/proc/stat) minus our processes' CPU on it (loopback "
        "softirq and anyone else's jobs). "
        "**Deliveries missing**: lines every member was owed (each message reaches the "
        "room but its sender) and had not received 8 s after the window, summed over the "
        "windows. **cluster_gaps / gaps_lost**: the nodes' /stats counters, summed over "
        "nodes and windows (a gap is a message whose predecessor had not arrived, repaired "
        "from the room's stream; gaps_lost, one the stream no longer held).",
        "",
    ]
    sweep = sweep_table(doc)
    if sweep:
        lines += [
            "## Where it stops keeping up (rate doubling)",
            "",
            f"From {fmt(plan['rate'])} msg/s, doubling per step of {plan['sweep_window_s']:g} s "
            f"(after {plan['warmup_s']:g} s of warm-up) until p99 passes "
            f"{plan['stop_ms']:g} ms, a window is invalid, or {fmt(plan['sweep_max'])} msg/s. "
            f"The knee is the highest rate whose step had p99 <= {plan['knee_ms']:g} ms and "
            "lost nothing, with every lower step passing too (`bench/stats.py`'s rule, as "
            "in `python -m bench`), where p99 is the worse of the same-node and the "
            "cross-node p99; one walk per configuration, so one noisy step shows as it "
            "was measured. At high rates fewer receivers are timed (the driver parses at "
            f"most {PARSE_BUDGET // 1000}k stamped lines/s), every member still counted. "
            "**servers** is the CPU of "
            "every chatd node and redis-server together, in shares of one core: they all "
            "run on CPU 0.",
            "",
            f"_{caption}_",
            "",
            *sweep,
            "",
        ]
    if doc.get("plot"):
        lines += [f"![latency and CPU per configuration]({doc['plot']})", ""]
    lines += ["## What this shows, and what it does not", ""]
    lines += _shows(doc)
    invalid = [
        (c["label"], r) for c in doc["configs"] for r in c["runs"] + c["sweep"] if not r["valid"]
    ]
    problems = [(c["label"], p) for c in doc["configs"] for p in c["problems"]]
    notes = [(c["label"], n) for c in doc["configs"] for n in c.get("notes", [])]
    if invalid or problems or notes:
        lines += ["## Invalid windows, problems and notes", ""]
        for label, r in invalid:
            lines.append(
                f"- {label}, {r['kind']} {fmt(r['params']['offered'])}/s "
                f"(window {r['rep']}, attempt {r['attempt'] + 1}): {'; '.join(r['reasons'])}"
            )
        for label, p in problems:
            lines.append(f"- {label}: {p}")
        for label, n in notes:
            lines.append(f"- {label}: {n}")
        lines.append("")
    return "\n".join(lines)


def _why_sizes(doc: dict[str, Any]) -> list[str]:
    """Why this room and rate, with the baseline's own cost from this run."""
    base = _get(doc, "baseline")
    cpu = (base or {}).get("cpu_nodes") or [None]
    util, rate = (cpu[0] or {}).get("median"), _med(base, "deliveries_per_s")
    cost = ""
    if util is not None and rate:
        cost = (
            f" In this run the baseline node used {util * 100:.0f} % of its core for "
            f"{fmt(rate)} deliveries/s ({util / rate * 1e6:.1f} µs of CPU per delivery: at "
            "low rates the reactor writes each delivery on its own), so the nodes and "
            "redis-server of a cluster had the rest of that core for what the cluster adds."
        )
    return [
        "**Why these sizes.** Every server runs on one core, so the room and the rate are "
        "chosen to keep the single node well below saturation: then the comparison shows "
        "what the cluster adds to a line's trip, not a queue in front of a full core."
        + cost
        + " A bigger room or a faster rate would leave the 4-node cluster no headroom on "
        "the shared core; the rate-doubling walk below finds where each configuration "
        "stops keeping up."
    ]


def _tree(doc: dict[str, Any]) -> str:
    tree = doc.get("chatd_tree") or {}
    if not tree.get("commit"):
        return ""
    changed = " with uncommitted changes in server/" if tree.get("server_changed") else ""
    if tree.get("changed_during_run"):
        changed += ", **changed while the bench ran**"
    how = (
        "a copy of server/chatd taken at the start, run by every node"
        if tree.get("snapshot")
        else "server/chatd"
    )
    return f" (commit {tree['commit']}{changed}; {how}, sha256 {tree['server_sha256']})"


def _senders(doc: dict[str, Any]) -> str:
    parts = []
    for c in doc["configs"]:
        nodes = c.get("sender_nodes")
        if nodes and c["nodes"] > 1:
            parts.append(f"{c['nodes']} nodes: senders on nodes {', '.join(map(str, nodes))}")
    return "; ".join(parts) or "every sender on the one node"


def _shows(doc: dict[str, Any]) -> list[str]:
    """What this shows / what it does not: the run's own figures, and the limits."""
    found = findings(doc)
    if not found:
        return ["No configuration produced a valid window; see the list below.", ""]
    return [
        "**What this shows.** At "
        + f"{fmt(doc['plan']['rate'])} msg/s into a room of {doc['plan']['members']}, "
        + "; ".join(found)
        + ". The gap between a cluster's cross-node and same-node figures is the trip "
        "through Redis (node A's PUBLISH script, Redis's push to node B's subscriber "
        "connection, node B's decoding) plus each process's wait for its turn on the one "
        "shared core.",
        "",
        *_paragraphs(
            cpu_findings(doc), sweep_findings(doc), loss_findings(doc), loadgen_findings(doc)
        ),
        "**What it does not show.** Scale-out: every node and redis-server share one core "
        "here, so more nodes add processes and Redis hops, never CPU; on separate machines "
        "each node would carry only its own members' fan-out, and the per-message cost "
        "above would be paid in parallel. Network: everything is loopback, so a real "
        "network's round trips (two per cross-node line: to Redis and from it) come on "
        "top. Failure: Redis and the nodes stay up throughout, so nothing here measures a "
        "node's or Redis's loss, a resync or a burst. One room only, with no joins, parts "
        "or nick changes during the windows (the state channel is idle), and one run on a "
        "shared machine: the table gives the share of each pinned CPU that other work "
        f"took in the valid windows; windows where it passed {MAX_FOREIGN * 100:.0f} % "
        "were measured again (any such attempt is listed below).",
        "",
    ]


def _paragraphs(*parts: list[str]) -> list[str]:
    out: list[str] = []
    for part in parts:
        for text in part:
            out += [text, ""]
    return out


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    """Three panels: latency per configuration (same/cross node), CPU per process, and
    the sweep's p99 against the offered rate."""
    cfgs = [c for c in doc["configs"] if _sum(c).get("n_valid")]
    if not cfgs:
        return None
    has_sweep = any(c["sweep"] for c in doc["configs"])
    ncols = 3 if has_sweep else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.8), squeeze=False)
    ax_lat, ax_cpu = axes[0][0], axes[0][1]
    labels = [c["label"].replace(" (baseline)", "\n(baseline)") for c in cfgs]
    xs = range(len(cfgs))
    width = 0.2
    series = (
        ("same_p50_ms", "same node p50", "#1b9e77", -1.5),
        ("same_p99_ms", "same node p99", "#66c2a5", -0.5),
        ("cross_p50_ms", "cross node p50", "#d95f02", 0.5),
        ("cross_p99_ms", "cross node p99", "#fc8d62", 1.5),
    )
    for key, label, color, off in series:
        meds, errs_lo, errs_hi, pos = [], [], [], []
        for i, c in enumerate(cfgs):
            s = _sum(c).get(key)
            if not s:
                continue
            pos.append(i + off * width)
            meds.append(s["median"])
            errs_lo.append(s["median"] - s["min"])
            errs_hi.append(s["max"] - s["median"])
        if meds:
            ax_lat.bar(
                pos, meds, width, yerr=[errs_lo, errs_hi], color=color, label=label, capsize=2
            )
            for x, y, up in zip(pos, meds, errs_hi, strict=True):
                ax_lat.text(x, y + up, f"{y:.1f}", ha="center", va="bottom", fontsize=6)
    ax_lat.set_xticks(list(xs), labels, fontsize=7)
    ax_lat.set_ylabel("latency (ms), median over windows", fontsize=8)
    ax_lat.set_title(
        f"{fmt(doc['plan']['rate'])} msg/s into a room of {doc['plan']['members']}", fontsize=9
    )
    ax_lat.legend(fontsize=7)
    ax_lat.grid(True, axis="y", alpha=0.3)

    shades = ("#1b9e77", "#66a61e", "#a6d854", "#b3de69")
    for i, c in enumerate(cfgs):
        s = _sum(c)
        bottom = 0.0
        for j, node in enumerate(s["cpu_nodes"]):
            v = node["median"] * 100 if node else 0.0
            ax_cpu.bar(
                i - 0.18,
                v,
                0.36,
                bottom=bottom,
                color=shades[j % len(shades)],
                edgecolor="white",
                label="chatd node" if i == len(cfgs) - 1 and j == 0 else None,
            )
            bottom += v
        if c["redis"] and s.get("cpu_redis"):
            v = s["cpu_redis"]["median"] * 100
            ax_cpu.bar(
                i - 0.18, v, 0.36, bottom=bottom, color="#d62728",
                label="redis-server" if c is cfgs[-1] else None,
            )  # fmt: skip
            bottom += v
        ax_cpu.text(i - 0.18, bottom, f"{bottom:.0f}", ha="center", va="bottom", fontsize=7)
        if s.get("cpu_loadgen"):
            v = s["cpu_loadgen"]["median"] * 100
            ax_cpu.bar(
                i + 0.18, v, 0.36, color="#7570b3", hatch="//",
                label="load generator (CPU 1)" if c is cfgs[-1] else None,
            )  # fmt: skip
            ax_cpu.text(i + 0.18, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax_cpu.set_xticks(list(xs), labels, fontsize=7)
    ax_cpu.set_ylabel("% of one core over the window (median)", fontsize=8)
    ax_cpu.set_title("CPU: nodes stacked + redis (CPU 0); load gen (CPU 1)", fontsize=9)
    ax_cpu.legend(fontsize=7)
    ax_cpu.grid(True, axis="y", alpha=0.3)

    if has_sweep:
        ax = axes[0][2]
        invalid_labelled = False
        for c in doc["configs"]:
            last: dict[float, dict[str, Any]] = {}
            for r in c["sweep"]:
                last[r["params"]["offered"]] = r
            pts = sorted(
                (rate, r["metrics"]["latency_p99_ms"], r["valid"])
                for rate, r in last.items()
                if r["metrics"]["latency_p99_ms"] is not None
            )
            good = [p for p in pts if p[2]]
            line_color = COLORS.get(c["config"])
            if good:
                ax.plot(
                    [p[0] for p in good],
                    [p[1] for p in good],
                    "-o",
                    ms=3.5,
                    color=line_color,
                    label=c["label"],
                )
            bad = [p for p in pts if not p[2]]
            if bad:
                ax.plot(
                    [p[0] for p in bad],
                    [p[1] for p in bad],
                    "o",
                    ms=5,
                    mfc="none",
                    color=line_color,
                    label="invalid step (hollow)" if not invalid_labelled else None,
                )
                invalid_labelled = True
        ax.axhline(doc["plan"]["knee_ms"], color="red", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        rates = sorted({r["params"]["offered"] for c in doc["configs"] for r in c["sweep"]})
        ax.set_xticks(rates, [fmt(r) for r in rates], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("offered messages/s (total)", fontsize=8)
        ax.set_ylabel("p99 latency (ms), worse of same / cross node", fontsize=8)
        ax.set_title(f"Rate doubling (knee: p99 <= {doc['plan']['knee_ms']:g} ms)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "chatd cluster through Redis: one room\n" + textwrap.fill(doc["caption"], 40 * ncols),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict[str, Any], outdir: Path) -> None:
    """results.json, the plot and report.md into outdir."""
    outdir.mkdir(parents=True, exist_ok=True)
    if plot(doc, outdir / PLOT):
        doc["plot"] = PLOT
    (outdir / "results.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    (outdir / "report.md").write_text(render(doc))
