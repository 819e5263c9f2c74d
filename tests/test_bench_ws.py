"""bench.websocket, WebSocket against TCP on the reactor: the lean driver's WebSocket side
in-process, then one tiny live run of the bench, end to end.

``python -m bench.websocket --quick``: the four targets (line and IRC, each over TCP and
over WebSocket) in a room of 30 with 3 senders, rates 50 to 200 msg/s, then 50 and 100
idle connections each. It must write its report and results, deliver every message over
WebSocket as over TCP, and its count of one byte per delivery must agree with the frames
its timing receivers parsed. A step may be invalid only because the machine was busy with
other work (the bench's contention rule): the checks here hold either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import driver, servers
from chatwire import check_server_log

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("reactor", "reactor-ws", "reactor-irc", "reactor-irc-ws")

#: Reasons a contended machine cannot explain: the harness or a server is broken.
HARD_FAILURES = ("lost or reordered", "connection errors", "server exit", "not start", "setup")


def _contended(run: dict) -> bool:
    reasons = run.get("reasons") or []
    return any("machine contended" in r for r in reasons) and not any(
        h in r for r in reasons for h in HARD_FAILURES
    )


def test_websocket_targets_are_kept_out_of_the_main_matrix() -> None:
    assert not set(servers.WS_TARGETS) & set(servers.TARGETS)
    for name in ("reactor-ws", "reactor-irc-ws"):
        t = servers.target_for(name)
        assert (t.engine, t.transport, t.is_chatd) == ("reactor", "ws", True)
        argv = servers.chatd_argv(t, max_clients=5, max_sendq=4096)
        assert argv[argv.index("--http-port") + 1] == "0" and "--irc-port" not in argv
    assert servers.parse_listening("chatd reactor http: listening on 127.0.0.1:8080", "http") == (
        "127.0.0.1",
        8080,
    )
    assert servers.parse_listening("chatd reactor http: listening on 127.0.0.1:8080") is None


def test_the_flood_is_not_offered_over_websocket() -> None:
    with pytest.raises(ValueError):
        driver.Fleet("127.0.0.1", 1, dialect="resp", transport="ws")
    fleet = driver.Fleet("127.0.0.1", 1, transport="ws")
    try:
        assert fleet.mark == b"\x81" and fleet.encode_message(b"hi")[:2] == b"\x81\x82"
        with pytest.raises(ValueError, match="WebSocket"):
            fleet.flood(warmup_s=0, window_s=0, payload=8)
    finally:
        fleet.close()


@pytest.mark.timeout(150)
def test_a_tiny_websocket_bench_run_measures_both_dialects_both_ways(tmp_path: Path) -> None:
    for name in TARGETS:
        why = servers.unavailable(name)
        if why:
            pytest.skip(f"{name}: {why}")
    out, tmp = tmp_path / "report", tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.websocket", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp)},  # its servers' logs land in tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "chatd-bench-websocket/1"
    runs = doc["runs"]
    assert {r["target"] for r in runs} == set(TARGETS)
    unclean = [(r["target"], r["scenario"]) for r in runs if r["server"].get("exit_ok") is False]
    assert not unclean, unclean
    for run in runs:
        # no harness failure, no loss, and the byte count agreed with the parsed frames
        assert run["metrics"], run["reasons"]
        assert run["valid"] or _contended(run), (run["target"], run["reasons"])
        assert not any("frame markers" in r for r in run["reasons"])
        if run["scenario"] == "saturation":
            m = run["metrics"]
            assert m["lost"] == m["reordered"] == 0 and m["deliveries_per_s"] > 0
            assert m["latency_samples"] > 0
    idle = {(r["target"], r["params"]["connections"]) for r in runs if r["scenario"] == "idle"}
    assert idle == {(t, n) for t in TARGETS for n in (50, 100)}
    assert {k["target"] for k in doc["knees"]} == set(TARGETS)
    assert all(p["limit"] for k in doc["knees"] for p in k["per_rep"])
    ids = [g["id"] for g in doc["goals"]]
    assert ids == ["ws_knee_line", "ws_knee_irc", "ws_idle_rss_line", "ws_idle_rss_irc"]
    costs = doc["receive_ns_per_message"]
    assert 0 < costs["ws_core_feed"] < costs["wsproto_connection"]
    report = (out / "report.md").read_text()
    assert report.startswith("# WebSocket against TCP on the reactor")
    assert "python -m bench.websocket --quick" in report and "2 CPUs shared" in report
    for name in doc["plots"].values():
        assert (out / name).stat().st_size > 1000
    logs = sorted(tmp.glob("*/logs/*.err"))
    assert len(logs) == 2 * len(TARGETS)  # a knee job and an idle job per target
    for path in logs:
        check_server_log(f"bench.websocket's chatd {path.stem}", path)
