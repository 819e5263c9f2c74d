"""bench.cluster, the cluster scenario of the bench: one tiny live run, end to end.

``python -m bench.cluster --quick``: redis-server and 2 reactor nodes with ``--redis``,
20 members dealt over them, 2 senders (one per node) at 20 messages/s for 2 s. It must
write its report, time lines that crossed nodes, and lose nothing at that rate. The
window may be marked invalid only because the machine was busy with other work (the
bench's contention rule); the figures checked here hold either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import servers
from chatwire import check_server_log

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_a_tiny_cluster_run_times_cross_node_lines_and_loses_none(tmp_path: Path) -> None:
    if not servers.redis_available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    out, logs = tmp_path / "report", tmp_path / "logs"
    argv = ["--quick", "--out", str(out), "--logdir", str(logs)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "chatd-bench-cluster/1"
    (cfg,) = doc["configs"]
    assert (cfg["nodes"], cfg["redis"], cfg["problems"]) == (2, True, [])
    assert cfg["members_by_node"] == [10, 10] and cfg["sender_nodes"] == [1, 2]
    (run,) = cfg["runs"]
    m = run["metrics"]
    # Both senders timed at both nodes: lines to their own node and across through Redis.
    assert m["same_samples"] > 0 and m["cross_samples"] > 0
    assert m["cross_p99_ms"] is not None and m["cross_p99_ms"] > 0
    # Nothing lost: every member got every line owed to it, once, in order.
    assert m["deliveries_owed"] > 0
    assert m["deliveries_received"] == m["deliveries_owed"]
    assert (m["lost"], m["reordered"], m["missing_samples"]) == (0, 0, 0)
    assert all(x > 0 for x in m["deliveries_per_s_by_node"])
    counts = run["counters"]
    assert counts["cluster_received"] > 0 and counts["cluster_published"] > 0
    assert counts["cluster_gaps_lost"] == 0
    assert run["valid"] or all("contended" in why for why in run["reasons"]), run["reasons"]
    assert len(run["cpu"]["nodes"]) == 2 and run["cpu"]["redis"] is not None
    report = (out / "report.md").read_text()
    assert report.startswith("# chatd cluster") and "python -m bench.cluster --quick" in report
    if cfg["summary"]["n_valid"]:
        assert (out / "cluster.png").stat().st_size > 0
    node_logs = sorted(logs.glob("2-node*.err"))
    assert len(node_logs) == 2
    for path in node_logs:
        check_server_log(f"bench.cluster's chatd {path.stem}", path)
