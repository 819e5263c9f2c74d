"""report.md's saturation part (issue 10): the knee tables, the plot, and the mechanism.

Kept apart from report.py because it has one job of its own: say where each design
saturates and *why*, from this run's counters -- the knee per target, what ended each
sweep, and the send syscalls and queued writes per delivery that explain the gap.
"""

from __future__ import annotations

from typing import Any

from bench import counters, stats
from bench.matrix import SCENARIO_TITLES, Matrix
from bench.plots import ORDER
from bench.textfmt import fmt

#: What each target does with a chat line, a read, and a loop turn (the designs being
#: compared). Servers the bench does not build are described from their documentation
#: and source; chatd's from its engines (server/chatd/engines/).
DESIGNS: dict[str, str] = {
    "reactor": (
        "one thread, `selectors` (epoll). All chat lines of one read become one event. "
        "The events published to a room during one loop turn (chat from every sender, "
        "joins, quits) are gathered and, before the loop sleeps, delivered as one batch: "
        "each event encoded once per encoder, one append per member per turn (chatd's "
        "`fanout_events` / `fanout_batches` count it); each connection is then flushed "
        "once per loop turn, so the lines of many senders leave in one `send()` per member."
    ),
    "threaded": (
        "a thread per client. All chat lines of one read become one event, encoded once; "
        "the reading thread then does a blocking `send()` of it to every recipient, one "
        "after another, under the hub lock, so another sender's batch waits for the lock "
        "and nothing merges across senders: it has no loop turn, so no room batch."
    ),
    "asyncio": (
        "one thread, asyncio's event loop. All chat lines of one read become one event. "
        "A room's events of one loop iteration are gathered into one batch (the first "
        "schedules the flush with `call_soon`), which goes to each recipient with one "
        "`transport.write()`; that makes a `send()` at once when the transport's buffer is "
        "empty (it is, while readers keep up), so there is a send per recipient per batch."
    ),
    "asyncio+uvloop": (
        "the asyncio engine on uvloop (libuv): the same `transport.write()` per recipient "
        "per batch, which libuv tries to write immediately when nothing is queued."
    ),
    "redis": (
        "Redis pub/sub (C, one event loop): every PUBLISH is appended to each subscriber's "
        "output buffer, and the buffers are written in `beforeSleep`, once per loop turn; "
        "each message is one command, so there is no batching of lines per read."
    ),
    "reactor-irc": (
        "chatd's reactor behind its IRC listener: the same engine and hub, the IRC dialect's "
        "framing and encoding."
    ),
    "ngircd": (
        "ngIRCd (C, one event loop): a write buffer per connection, written when it "
        "passes 4 KiB or when the socket is next writable; it handles at most 3 commands per "
        "client per loop turn, scans every connection each turn, and forks a resolver "
        "subprocess for every new connection."
    ),
    "inspircd": (
        "InspIRCd 3 (C++, one event loop): a send queue per user, written out by its "
        "socket engine; here with flood protection off (see its config below)."
    ),
}


def knee_text(k: dict[str, Any] | None) -> str:
    """'3200', '>= 3200' (a lower bound), '< 50' (failed the first step), with the
    repetitions' knees in brackets when there were several."""
    if k is None:
        return "–"
    per = k["per_rep"]

    def one(rate: float | None, lower: bool) -> str:
        if rate is None:
            return "not measured" if lower else f"< {fmt(first)}"
        return ("≥" if lower else "") + fmt(rate)

    first = min((p.get("first_rate") or 0.0 for p in per), default=0.0) or None
    head = one(k["rate"], k["lower_bound"])
    if len(per) > 1:
        head += " [" + ", ".join(one(p["rate"], p["lower_bound"]) for p in per) + "]"
    return head


def _at(k: dict[str, Any], key: str, pct: bool = False) -> str:
    v = k["at_knee"].get(key)
    if not v:
        return "–"
    return f"{v['median'] * 100:.0f} %" if pct else fmt(v["median"])


def sends_at(k: dict[str, Any] | None, rate: float | None) -> str:
    """Send syscalls per delivery from the counting step at ``rate`` (None: the knee's)."""
    if k is None:
        return "–"
    counted = k.get("sendcount") or {}
    if rate is None:
        rep1 = next((p for p in k["per_rep"] if p["rep"] == 1), None)
        rate = rep1["rate"] if rep1 else None
        if rate is None:
            return "–"
        c = counted.get(str(rate))
        if c is None:
            return "–"
        tag = "" if rate == k["rate"] else f" (at {fmt(rate)}/s)"
        return fmt(c["sends_per_delivery"]) + tag
    c = counted.get(str(rate))
    return fmt(c["sends_per_delivery"]) if c else "–"


def _ended(k: dict[str, Any]) -> str:
    """What ended each repetition's walk: the limit and its first reason."""
    return "; ".join(f"{p['limit']}: {p['detail'].split('; ')[0]}" for p in k["per_rep"])


def events_per_batch_at_knee(
    k: dict[str, Any] | None, runs: list[dict[str, Any]] | None
) -> float | None:
    """Median over the repetitions' knee steps of chatd's events per room batch
    (``fanout_events`` / ``fanout_batches`` over the step, issue 20); None when chatd
    has no such counters or the knee steps were not valid."""
    if k is None or not runs:
        return None
    knee_at = {p["rep"]: p["rate"] for p in k["per_rep"] if p["rate"] is not None}
    vals = []
    for r in runs:
        p = r.get("params") or {}
        if (
            r.get("scenario") != "saturation"
            or r.get("target") != k["target"]
            or (p.get("room"), p.get("senders")) != (k["room"], k["senders"])
            or knee_at.get(r.get("rep")) != p.get("offered")
            or not r.get("valid")
            or r.get("retried")
        ):
            continue
        v = r["metrics"].get("events_per_batch")
        if v is None:
            v = counters.events_per_batch(r.get("server_counters"))
        if v is not None:
            vals.append(float(v))
    return stats.median(vals) if vals else None


def knee_table(
    ks: list[dict[str, Any]],
    m: Matrix,
    only_headline: bool = False,
    runs: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The knee per target (and per room and sender count unless only_headline); with
    ``runs``, chatd's events per room batch at the knee too (issue 20)."""
    rows = [
        (
            "| target | room | senders | knee msg/s | deliveries/s at knee | p99 ms at knee "
            "| server CPU | send syscalls per delivery | deliveries per write "
            "| events per batch at knee "
            f"| sends/delivery at {fmt(m.count_rate)} msg/s | load-gen CPU | next step |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        if only_headline and (k["room"], k["senders"]) != (m.headline_room, m.headline_senders):
            continue
        at_count = (
            sends_at(k, m.count_rate)
            if (k["room"], k["senders"]) == (m.headline_room, m.headline_senders)
            else "–"
        )
        rows.append(
            f"| {k['target']} | {k['room']} | {k['senders']} | {knee_text(k)} | "
            f"{_at(k, 'deliveries_per_s')} | {_at(k, 'latency_p99_ms')} | "
            f"{_at(k, 'server_cpu_util', pct=True)} | {sends_at(k, None)} | "
            f"{_at(k, 'deliveries_per_write')} | {fmt(events_per_batch_at_knee(k, runs))} | "
            f"{at_count} | "
            f"{_at(k, 'loadgen_cpu_util', pct=True)} | {_ended(k)} |"
        )
    return rows


def _count_at(k: dict[str, Any], rate: float | None) -> dict[str, Any] | None:
    """The counting step at ``rate`` (None: at repetition 1's knee), if it was valid."""
    counted = k.get("sendcount") or {}
    if rate is None:
        rep1 = next((p for p in k["per_rep"] if p["rep"] == 1), None)
        rate = rep1["rate"] if rep1 else None
    return counted.get(str(rate)) if rate is not None else None


def mechanism(
    ks: list[dict[str, Any]], m: Matrix, runs: list[dict[str, Any]] | None = None
) -> list[str]:
    """Why the knees differ, in this run's own counters (headline configuration)."""
    room, n = m.headline_room, m.headline_senders
    head = {k["target"]: k for k in ks if (k["room"], k["senders"]) == (room, n)}
    if not head:
        return []
    at_knee, at_rate, batches = [], [], []
    for t in ORDER:
        k = head.get(t)
        if k is None:
            continue
        c = _count_at(k, None)
        dps = (k["at_knee"].get("deliveries_per_s") or {}).get("median")
        if c and c["sends_per_delivery"]:
            spd = c["sends_per_delivery"]
            rate = f"{fmt(dps * spd)} sends/s, " if dps else ""
            at_knee.append(
                f"{t} {fmt(1 / spd)} deliveries per send ({rate}knee "
                f"{knee_text(k).split(' [')[0]} msg/s)"
            )
        epb = events_per_batch_at_knee(k, runs)
        if epb is not None:
            lg = _at(k, "loadgen_cpu_util", pct=True)
            batches.append(f"{t} {fmt(epb)} (load generator {lg})")
        c = _count_at(k, m.count_rate)
        if c and c["sends_per_delivery"]:
            per_write = c.get("deliveries_per_write")
            extra = f", {fmt(per_write)} per queued write" if per_write else ""
            at_rate.append(f"{t} {fmt(1 / c['sends_per_delivery'])}{extra}")
    if not at_knee and not at_rate and not batches:
        return []
    out = ["### What the counters show", ""]
    if batches:
        out += [
            (
                f"Room of {room}, {n} senders, events per room batch at the knee (chatd's "
                "`/stats` `fanout_events` over `fanout_batches` across each knee step): "
                + "; ".join(batches)
                + ". A reactor that gathers what one loop turn published to a room sends "
                "it to each member as one batch, so this is how many senders' lines one "
                "append per member carried; 1 means each line was a fan-out of its own."
            ),
            "",
        ]
    if at_knee:
        out += [
            (
                f"Room of {room}, {n} senders, counted by perf on the server process in a "
                "separate step at each target's knee (repetition 1): "
                + "; ".join(at_knee)
                + ". Sends/s is deliveries per second at the knee over deliveries per send."
            ),
            "",
        ]
    if at_rate:
        out += [
            (
                f"At a common {fmt(m.count_rate)} msg/s, deliveries per send: "
                + "; ".join(at_rate)
                + "."
            ),
            "",
        ]
    out += [
        (
            "How to read them: deliveries per queued write (chatd's `/stats` `writes_out`, "
            "one per batch queued to one member) above 1 means a read held several lines of "
            "one sender, which every chatd engine batches into one event; a server that "
            "falls behind reads more lines per read, so it also shows where queueing has "
            "set in. Deliveries per send above deliveries per write means the server merged "
            "the writes of several senders into one send to a member, which only a server "
            "that flushes each connection once per loop turn does. A small send costs "
            "about the same whatever it carries (the syscall and loopback's TCP path, not "
            "the copy of a few hundred bytes), so a server whose sends per second use up "
            "its core has reached its knee: the more deliveries each send carries, the "
            "higher the rate before that happens."
        ),
        "",
    ]
    return out


def section(doc: dict[str, Any], plots: dict[str, str]) -> list[str]:
    """The whole saturation section of report.md ([] when the run had no sweep)."""
    ks: list[dict[str, Any]] = doc.get("knees") or []
    if not ks:
        return []
    m: Matrix = doc["_matrix"]
    caption = doc["caption"]
    rates = m.saturation_rates()
    out = [
        f"## {SCENARIO_TITLES['saturation']} (lean driver)",
        "",
        (
            f"S senders ({', '.join(map(str, m.saturation_senders))}) in rooms of "
            f"{', '.join(map(str, m.saturation_rooms))}, open loop: message k is due at "
            "t0 + k / rate and carries that intended time, so a server that falls behind "
            f"shows as latency. The total rate starts at {fmt(rates[0])} msg/s and doubles "
            f"each step (up to {fmt(rates[-1])}); a step is {m.saturation_warmup_s:g} s of "
            f"warm-up and a {m.saturation_window_s:g} s window, then up to "
            f"{m.saturation_drain_s:g} s for late deliveries (one still missing counts at "
            f"that wait). The sweep stops after a step whose p99 passes "
            f"{m.stop_p99_ms:g} ms, that lost a message, or that was invalid (load "
            "generator saturated, senders held back by the server, contended machine). "
            f"**The knee** is the highest rate at which p99 <= {m.knee_p99_ms:g} ms and "
            "nothing was lost, every lower step passing too; ≥ marks a knee cut short by "
            "the measurement (load generator, top of the sweep) rather than by the server. "
            f"The room of {m.headline_room} with {m.headline_senders} senders ran "
            f"{m.headline_reps} times (the knee is the median, the repetitions' knees in "
            f"brackets); the rest of the grid {m.saturation_grid_reps} time(s)."
        ),
        "",
        f"_{caption}_",
        "",
    ]
    if "saturation" in plots:
        out += [f"![saturation: p99 vs offered rate]({plots['saturation']})", ""]
    out += [
        "### Knee per target",
        "",
        *knee_table(ks, m, runs=doc.get("runs")),
        "",
        (
            "Deliveries/s, p99 and CPU are those of the steps at the knee (median over the "
            "repetitions). Server CPU is the server process's utime+stime over the window "
            "as a share of one core; load-gen CPU the driver's own. Send syscalls per "
            "delivery come from a separate counting step at the knee of repetition 1 (perf "
            "on the server's sendto/sendmsg/sendmmsg/write/writev tracepoints, which slows "
            "every syscall, so that step's latency is not used); deliveries per write from "
            "chatd's `/stats` around each step (chatd only), and events per batch from the "
            "same counters (`fanout_events` / `fanout_batches`, chatd engines that gather "
            "a room's events per loop turn). *Next step* is what ended "
            "each repetition's walk up the rates."
        ),
        "",
        *mechanism(ks, m, doc.get("runs")),
        "### What each target does per line, per read and per loop turn",
        "",
    ]
    present = [t for t in ORDER if any(k["target"] == t for k in ks)]
    out += [f"- **{t}**: {DESIGNS.get(t, '')}" for t in present]
    out += [""]
    return out


def headline_rows(doc: dict[str, Any]) -> list[str]:
    """The README's knee table: the headline configuration, one row per target."""
    ks = doc.get("knees") or []
    if not ks:
        return []
    return knee_table(ks, doc["_matrix"], only_headline=True, runs=doc.get("runs"))


def versions_section(doc: dict[str, Any]) -> list[str]:
    """Versions of every target and the IRC daemons' configs, as they ran."""
    versions: dict[str, str] = doc.get("versions") or {}
    configs: dict[str, str] = doc.get("irc_configs") or {}
    if not versions and not configs:
        return []
    out = ["## Targets: versions and configs", "", "| target | version |", "|---|---|"]
    out += [f"| {t} | {v or 'unknown'} |" for t, v in versions.items()]
    out += [
        "",
        (
            "chatd runs as `python -m chatd --host 127.0.0.1 --port 0 --engine E [--uvloop] "
            "[--irc-port 0] --max-clients 12000 --max-sendq 1048576 --flood-rate 0`; Redis as "
            "`redis-server --save '' --appendonly no --client-output-buffer-limit "
            '"pubsub 0 0 0"`. The IRC daemons run in the foreground on 127.0.0.1 with these '
            "configs (PORT is a free port, RUNDIR the run's log directory), flood protection "
            "off: ngircd `MaxPenaltyTime = 0` (no penalty delays), `MaxConnectionsIP = 0`; "
            "InspIRCd a connect class with `threshold`/`commandrate` no sender reaches and "
            '`fakelag="no"`, `<performance netbuffersize="65534">`, `--runasroot` as root.'
        ),
        "",
    ]
    for t, text in configs.items():
        out += [f"{t}:", "", "```", text.rstrip("\n"), "```", ""]
    return out
