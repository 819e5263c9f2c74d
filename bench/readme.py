"""Keep the headline in bench/README.md and README.md in step with a committed report.

The README must show only figures that come from a committed report, so it is never
edited by hand between its markers: ``python -m bench --update-readme DIR`` rewrites that
block from DIR/results.json (the goals, the headline table, the main plot, the command
and the machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import matrix, report

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
        *report.goals_table(doc),
        "",
        *report.headline(doc["cells"], doc["_matrix"]),
        "",
    ]
    plots = doc.get("plots") or {}
    if "fanout" in plots:
        lines += [f"![paced fan-out: p99 latency vs load]({rel}/{plots['fanout']})", ""]
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
