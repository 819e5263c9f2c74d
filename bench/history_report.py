"""The report's section on history's cost (issue 17): the reactor with history on, its
default, against the same reactor with ``--ephemeral``, measured side by side in one run.

Three figures: the saturation knee of the headline configuration, the server's CPU per
delivery at every rate of that sweep that both passed (the process's CPU, so history's
writer thread counts), and RSS per idle connection.
"""

from __future__ import annotations

from typing import Any

from bench import aggregate
from bench.matrix import Matrix
from bench.report import cell_text, goals_table
from bench.saturation_report import knee_text
from bench.textfmt import fmt

ON, OFF = aggregate.HISTORY_ON, aggregate.HISTORY_OFF


def _row(label: str, on: Any, off: Any, metric: str) -> str:
    """A table row: ``metric`` with history on, off, and their ratio."""
    a = aggregate.median_of(on, metric)
    b = aggregate.median_of(off, metric)
    ratio = fmt(a / b) if a is not None and b else "–"
    return f"| {label} | {cell_text(on, metric)} | {cell_text(off, metric)} | {ratio} |"


def section(doc: dict[str, Any]) -> list[str]:
    """The section's markdown lines; none when the run lacks either side."""
    goals = goals_table(doc, aggregate.HISTORY_GOAL_IDS)
    if not goals:
        return []
    m: Matrix = doc["_matrix"]
    cs, ks = doc["cells"], doc["knees"]
    room, senders = m.headline_room, m.headline_senders
    out = [
        "## History's cost (issue 17)",
        "",
        (
            f"`{ON}` runs with history on, its default (SQLite in a data dir under the run's "
            f"logs: one writer thread, a commit per 0.1 s batch window); `{OFF}` is the same "
            "reactor with `--ephemeral` (a ring per room in memory, nothing on disk). Both "
            "run the same load in the same run, one after the other."
        ),
        "",
        *goals,
        "",
        f"_{doc['caption']}_",
        "",
        f"| | {ON} (history on) | {OFF} (history off) | on / off |",
        "|---|---|---|---|",
    ]
    kon = aggregate.find_knee(ks, ON, room, senders)
    koff = aggregate.find_knee(ks, OFF, room, senders)
    ratio = (
        fmt(kon["rate"] / koff["rate"]) if kon and koff and kon["rate"] and koff["rate"] else "–"
    )
    out.append(
        f"| knee msg/s, room of {room}, {senders} senders | {knee_text(kon)} | "
        f"{knee_text(koff)} | {ratio} |"
    )
    for rate in aggregate.history_rates(cs, ks, m):
        on = aggregate.find(
            cs, "saturation", ON, "driver", room=room, senders=senders, offered=rate
        )
        off = aggregate.find(
            cs, "saturation", OFF, "driver", room=room, senders=senders, offered=rate
        )
        out.append(
            _row(
                f"server CPU µs per delivery at {fmt(rate)} msg/s",
                on,
                off,
                "server_cpu_us_per_delivery",
            )
        )
    for n in sorted(m.idle_counts):
        on = aggregate.find(cs, "idle", ON, connections=n)
        off = aggregate.find(cs, "idle", OFF, connections=n)
        if on is None and off is None:
            continue
        out.append(_row(f"RSS bytes per idle connection at {n}", on, off, "rss_per_conn_bytes"))
    out += [
        "",
        (
            "CPU per delivery = the server process's CPU time (user + system, every thread) "
            "over a step's window / the deliveries counted at the receivers in it. A knee is "
            "a step of a sweep whose rate doubles, so two knees that differ by less than 2x "
            "read the same: the CPU per delivery at equal rates is the finer measure, at "
            "a rate where the server is not CPU-bound (below 90 % of a CPU): above it the "
            "figure is one CPU over the deliveries, whatever the server does with it."
        ),
        "",
    ]
    return out
