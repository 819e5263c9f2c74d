"""Keep the headline in bench/README.md and README.md in step with a committed report.

The README must show only figures that come from a committed report, so it is never
edited by hand between its markers: ``python -m bench --update-readme DIR`` rewrites that
block from DIR/results.json (issue 20's goals and the storm's table, the knee goals and
table, the saturation plot, issue 4's goals and headline table, the command and the
machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import aggregate, matrix, report, saturation_report, storm

README = Path(__file__).resolve().parent / "README.md"
#: The project's README shows the same headline block.
PROJECT_README = README.parent.parent / "README.md"
START = "<!-- headline:start -->"
END = "<!-- headline:end -->"


def load(report_dir: Path) -> dict[str, Any]:
    """results.json of a report directory, with its Matrix rebuilt under "_matrix"."""
    doc = json.loads((report_dir / "results.json").read_text())
    doc["_matrix"] = matrix.from_dict(doc["matrix"])
    return doc


def block(report_dir: Path, readme: Path = README) -> str:
    """The generated headline block for report_dir (links relative to the README)."""
    doc = load(report_dir)
    rel = report_dir.resolve().relative_to(readme.resolve().parent)
    lines = [
        START,
        f"From [{rel}/report.md]({rel}/report.md), run {doc['created']} with "
        f"`{doc['command']}` ({doc['duration_s'] / 60:.1f} min). **Machine:** {doc['caption']}; "
        f"{doc['machine']['cpu_model']}, Python {doc['python']}.",
        "",
    ]
    plots = doc.get("plots") or {}
    m = doc["_matrix"]
    issue20 = report.goals_table(doc, storm.GOAL_IDS)
    if issue20:
        lines += [
            "**Issue 20: fan-out per loop turn** (each goal met, or missed by how much, "
            "with the mechanism from the run's own counters):",
            "",
            *issue20,
            "",
        ]
    storm_rows = report.storm_rows(doc["cells"])
    if storm_rows:
        lines += [
            f"**Join and quit storm** of {m.storm_connections} connections from loopback, "
            "chatd with its default options; round trips of members of `#lobby`:",
            "",
            *storm_rows,
            "",
        ]
    knee_goals = report.goals_table(doc, aggregate.KNEE_GOAL_IDS)
    if knee_goals:
        lines += [
            f"**Where the designs differ: the saturation knee** (the highest total rate at "
            f"which p99 <= {m.knee_p99_ms:g} ms and nothing is lost; {m.headline_senders} "
            f"senders into a room of {m.headline_room}, open loop, rate doubling per step):",
            "",
            *knee_goals,
            "",
            *saturation_report.headline_rows(doc),
            "",
        ]
        if "saturation" in plots:
            lines += [f"![saturation: p99 vs offered rate]({rel}/{plots['saturation']})", ""]
    history_goals = report.goals_table(doc, aggregate.HISTORY_GOAL_IDS)
    if history_goals:
        lines += [
            "**History's cost** (the reactor with history on, its default, against "
            "`--ephemeral`, side by side):",
            "",
            *history_goals,
            "",
        ]
    lines += [
        "**Issue 4's scenarios** (paced fan-out, flood, many senders, slow consumer, idle):",
        "",
        *report.goals_table(doc, report.ISSUE4_GOALS),
        "",
        *report.headline(doc["cells"], m),
        "",
    ]
    lines.append(END)
    return "\n".join(lines)


def update(report_dir: Path, readme: Path = README) -> None:
    """Replace the block between the markers in readme (append it if absent)."""
    text = readme.read_text()
    new = block(report_dir, readme)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + new + tail
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    readme.write_text(text)
