"""bench.stalls, the harness behind the stall figures: one small live run and the report."""

from __future__ import annotations

import json
from pathlib import Path

from bench import stalls
from chatwire import SERVER_SRC, check_server_log


def test_a_small_stall_run_measures_round_trips_and_ends_by_itself(tmp_path: Path) -> None:
    log = tmp_path / "chatd.stderr"
    result = stalls.run(stalls.SCENARIOS["modes"], "reactor", SERVER_SRC, 5, stderr=log)
    check_server_log("chatd for bench.stalls", log, status=int(result["server_exit"]))
    assert result["attack_ended"] is True and result["server_alive"] is True
    assert result["probe_rtts"] > 0 and float(result["probe_worst_rtt_ms"]) > 0
    (tmp_path / "after.jsonl").write_text(json.dumps(result) + "\n")
    before = dict(result, attack_ended=False, probe_worst_rtt_ms=120000.0)
    (tmp_path / "before.jsonl").write_text(json.dumps(before) + "\n")
    report = stalls.render(tmp_path)
    assert "| modes | reactor |" in report and "not over after 120 s" in report
