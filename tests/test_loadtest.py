"""Tests for the Locust load test (``loadtest/``).

Two layers:

* Unit tests of ``loadtest/chat_core.py``, the sans-IO part: framing, payloads, sequence
  checks, schedules, identities and the JSON report. It imports ``hdrh`` but never Locust.
* Smoke tests that start ``chatd`` and run ``locust -f loadtest/chat.py --headless`` as
  *subprocesses* for a few seconds, then check Locust's JSON and our histogram file. Never
  import locust here: importing it monkey-patches ``socket``, ``threading`` and
  ``selectors`` for the whole test process.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
LOADTEST = REPO / "loadtest"
LOCUSTFILE = LOADTEST / "chat.py"
SERVER_SRC = REPO / "server"


def _load_core() -> Any:
    spec = importlib.util.spec_from_file_location("chat_core", LOADTEST / "chat_core.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chat_core"] = module
    spec.loader.exec_module(module)
    return module


core = _load_core()


# --------------------------------------------------------------------------- framing


lines_strategy = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    max_size=20,
)


@given(lines=lines_strategy, cuts=st.lists(st.integers(min_value=0, max_value=2000)))
def test_line_splitter_reassembles_lines_however_the_bytes_are_split(
    lines: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    splitter = core.LineSplitter()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out.extend(splitter.feed(data[start:end]))
    assert out == lines
    assert splitter.pending == 0


def test_line_splitter_strips_cr_and_keeps_the_partial_tail() -> None:
    splitter = core.LineSplitter()
    assert splitter.feed(b"a\r\nb\npar") == [b"a", b"b"]
    assert splitter.pending == 3
    assert splitter.feed(b"tial\n") == [b"partial"]


def test_line_splitter_refuses_an_endless_line() -> None:
    splitter = core.LineSplitter()
    with pytest.raises(core.ProtocolError):
        for _ in range(core.MAX_PARTIAL_LINE // 1000 + 2):
            splitter.feed(b"x" * 1000)


# --------------------------------------------------------------------------- payloads


@given(
    seq=st.integers(min_value=0, max_value=10**9),
    stamp=st.integers(min_value=0, max_value=2**53),
    size=st.integers(min_value=0, max_value=3000),
)
def test_message_round_trips_through_the_server_stamp(seq: int, stamp: int, size: int) -> None:
    line = core.encode_message("ltab12w3n45", seq, stamp, size)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line[:-1]
    assert len(text) == max(size, len(text.split(b" .")[0]))
    kind, msg = core.classify(b"ltab12w3n45: " + text)
    assert kind is core.LineKind.MESSAGE
    assert msg == core.Message("ltab12w3n45", "ltab12w3n45", seq, stamp)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"* alice joined #load0", core.LineKind.NOTICE),
        (b"* alice: LT x 1 2", core.LineKind.NOTICE),
        (b"! unknown command", core.LineKind.ERROR),
        (b"alice: hello there", core.LineKind.OTHER),
        (b"alice (private): LT alice 1 2", core.LineKind.OTHER),
        (b"no separator", core.LineKind.OTHER),
    ],
)
def test_classify_tells_our_messages_from_everything_else(line: bytes, kind: Any) -> None:
    assert core.classify(line) == (kind, None)


def test_classify_rejects_a_mangled_load_test_message() -> None:
    with pytest.raises(core.ProtocolError):
        core.classify(b"alice: LT alice notanumber 5")
    with pytest.raises(core.ProtocolError):
        core.classify(b"alice: LT alice")


# --------------------------------------------------------------------------- handshake


def test_registration_confirmation_must_name_our_nick() -> None:
    nick = "ltab12w0n7"
    assert core.confirms_registration(f"* you are {nick}, in #lobby (3 here)", nick)
    assert core.confirms_registration(f"* Welcome {nick.upper()}! You are in #lobby", nick)
    assert not core.confirms_registration("* welcome to chatd", nick)
    assert not core.confirms_registration(f"* {nick}x joined #lobby", nick)
    assert not core.confirms_registration(f"! {nick} is taken", nick)


def test_join_confirmation_needs_the_room_and_us() -> None:
    nick = "ltab12w0n7"
    assert core.confirms_join("* you joined #load3 (10 here)", nick, "#load3")
    assert core.confirms_join(f"* {nick} joined load3", nick, "#load3")
    # another member moving into our target room must not count as our join
    assert not core.confirms_join("* bob left #lobby for #load3", nick, "#load3")
    assert not core.confirms_join("* you joined #load30 (1 here)", nick, "#load3")
    assert not core.confirms_join(f"{nick}: you joined #load3", nick, "#load3")


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:4040", ("127.0.0.1", 4040)),
        ("tcp://localhost:5000/", ("localhost", 5000)),
        ("example.org", ("example.org", 4040)),
        ("[::1]:4041", ("::1", 4041)),
        (":4042", ("127.0.0.1", 4042)),
    ],
)
def test_parse_host_accepts_the_forms_people_type(host: str, expected: tuple[str, int]) -> None:
    assert core.parse_host(host) == expected


@given(
    share=st.floats(min_value=0, max_value=1),
    start=st.integers(min_value=0, max_value=10**6),
    n=st.integers(min_value=1, max_value=2000),
)
def test_spread_picks_an_exact_share_of_any_consecutive_block(
    share: float, start: int, n: int
) -> None:
    frac = core.to_fraction(share)
    picked = sum(core.spread(i, frac) for i in range(start, start + n))
    assert abs(picked - n * frac) < 1


@given(
    share=st.floats(min_value=0, max_value=1),
    start=st.integers(min_value=0, max_value=10**6),
    n=st.integers(min_value=1, max_value=2000),
)
def test_spread_early_picks_the_same_exact_share(share: float, start: int, n: int) -> None:
    frac = core.to_fraction(share)
    picked = sum(core.spread_early(i, frac) for i in range(start, start + n))
    assert abs(picked - n * frac) < 1


def test_senders_and_timing_receivers_are_different_users_at_small_shares() -> None:
    tenth = core.to_fraction(0.1)
    senders = {i for i in range(1000) if core.spread(i, tenth)}
    timers = {i for i in range(1000) if core.spread_early(i, tenth)}
    assert len(senders) == len(timers) == 100
    assert not senders & timers


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_roles_are_balanced_over_workers_and_rooms(workers: int) -> None:
    """1000 users, rooms of 100, share 0.1: 100 senders, equal per worker, ~10 per room."""
    tenth = core.to_fraction(0.1)
    per_room: dict[str, int] = {}
    per_worker = []
    for w in range(workers):
        slots = range(1000 // workers)
        chosen = [s for s in slots if core.spread(s, tenth)]
        per_worker.append(len(chosen))
        for slot in chosen:
            room = core.room_for(core.global_index(slot, w, workers), 100)
            per_room[room] = per_room.get(room, 0) + 1
    assert sum(per_worker) == 100
    assert max(per_worker) - min(per_worker) <= 1
    assert sorted(per_room) == sorted(f"#load{r}" for r in range(10))
    assert all(abs(n - 10) <= workers for n in per_room.values())
    if workers <= 2:
        assert set(per_room.values()) == {10}


@given(workers=st.integers(min_value=1, max_value=16), per=st.integers(min_value=1, max_value=50))
def test_global_indices_never_collide_across_workers(workers: int, per: int) -> None:
    seen = {core.global_index(slot, w, workers) for w in range(workers) for slot in range(per)}
    assert seen == set(range(workers * per))


def test_nicks_are_valid_and_distinct() -> None:
    nicks = {core.make_nick("a1b2", w, n) for w in range(50) for n in range(1, 200)}
    assert len(nicks) == 50 * 199
    assert all(len(nick) <= 30 and nick[0].isalpha() for nick in nicks)


def test_to_fraction_rejects_shares_outside_zero_to_one() -> None:
    with pytest.raises(ValueError):
        core.to_fraction(1.5)
    assert core.to_fraction(0.1) == Fraction(1, 10)


# --------------------------------------------------------------------------- checks


def test_sequence_tracker_reports_gaps_and_reorders_once() -> None:
    tracker = core.SequenceTracker()
    ok, lost, reordered = core.Verdict.OK, core.Verdict.LOST, core.Verdict.REORDERED
    assert tracker.observe("a", 5) == (ok, 0)  # first sight only sets the baseline
    assert tracker.observe("a", 6) == (ok, 0)
    assert tracker.observe("a", 9) == (lost, 2)
    assert tracker.observe("a", 8) == (reordered, 0)
    assert tracker.observe("a", 10) == (ok, 0)
    assert tracker.observe("a", 10) == (reordered, 0)
    assert tracker.observe("b", 0) == (ok, 0)
    assert tracker.received_counts() == {"a": 11, "b": 1}


@given(seed=st.integers(0, 2**32), rate=st.floats(min_value=0.1, max_value=100))
def test_periodic_schedule_is_evenly_spaced_after_a_random_phase(seed: int, rate: float) -> None:
    sched = core.SendSchedule(rate, core.Arrivals.PERIODIC, 1000.0, random.Random(seed))
    first = sched.peek()
    assert 1000.0 <= first < 1000.0 + 1 / rate
    times = []
    for _ in range(10):
        times.append(sched.peek())
        sched.advance()
    for k, t in enumerate(times):
        assert t == pytest.approx(first + k / rate)
    assert sched.due_by(times[-1]) == 10
    assert sched.due_by(first + 19.5 / rate) == 20


def test_poisson_schedule_has_the_requested_mean_rate() -> None:
    sched = core.SendSchedule(50.0, core.Arrivals.POISSON, 0.0, random.Random(7))
    for _ in range(5000):
        sched.advance()
    assert sched.peek() == pytest.approx(100.0, rel=0.05)
    before = sched.index
    assert sched.due_by(sched.peek() - 1e-9) == before
    assert sched.due_by(sched.peek()) == before + 1


def test_undelivered_counts_the_tail_receivers_never_got() -> None:
    # process 1 ran sender s1 (sent 10) and a receiver that got up to seq 7 of s1;
    # process 2 ran a receiver that got everything of s1 and something from a stranger.
    p1 = core.Delivery(seen={"s1": 1}, received={"s1": 8}, sent={"s1": 10})
    p2 = core.Delivery(seen={"s1": 1, "human": 1}, received={"s1": 10, "human": 3}, sent={})
    assert core.undelivered([p1, p2]) == (2, 2)
    assert core.undelivered([]) == (0, 0)


# --------------------------------------------------------------------------- start gate


def test_fill_is_full_once_every_spawned_user_has_settled_in_any_process() -> None:
    fill = core.Fill()
    fill.update("w1", settled=5, joined=5)
    fill.update("w2", settled=5, joined=4)  # one handshake failed: settled, not joined
    assert not fill.full  # spawning not complete: the total is not known yet
    fill.expected = 12
    assert not fill.full
    fill.update("w1", settled=7, joined=7)  # newest counts replace, never add up
    assert fill.full and fill.total_settled == 12 and fill.total_joined == 11


def test_window_counters_are_traffic_not_run_totals() -> None:
    assert set(core.WINDOW_COUNTERS) <= set(core.COUNTERS)
    for total in ("connects", "joins", "sessions", "senders", "early_messages"):
        assert total not in core.WINDOW_COUNTERS


# --------------------------------------------------------------------------- report


def _snapshot(latencies: list[int], role: str = "worker", **counters: int) -> Any:
    hist = core.new_histogram()
    for value in latencies:
        hist.record_value(value)
    counts = dict.fromkeys(core.COUNTERS, 0)
    counts.update(counters)
    return core.Snapshot(
        hist=hist.encode().decode("ascii") if latencies else "",
        counters=counts,
        failures={},
        cpu_seconds=2.0,
        wall_seconds=10.0,
        role=role,
        delivery=core.Delivery(),
    )


def test_report_merges_workers_and_keeps_its_schema() -> None:
    a = _snapshot([1000] * 90, connects=5, sent=100, intended=100, timed=90)
    b = _snapshot([3000] * 10, connects=5, sent=95, intended=100, timed=10)
    b.failures = {"lost": 1}
    b.warmup_cpu_seconds = 1.25
    b.warmup_saturated = ["cpu sample >= 90%"]
    b.measure_started = 3.0
    master = core.Snapshot(role="master", cpu_seconds=0.5, wall_seconds=10.0)
    wire = [core.Snapshot.from_wire(json.loads(json.dumps(s.to_wire()))) for s in (a, b)]
    report = core.build_report(
        [master, *wire],
        duration_s=10.0,
        options={"room_size": 10},
        host="127.0.0.1:4040",
        started_at=1.0,
        stopped_at=11.5,
        drain_s=0.3,
        users={"peak": 10},
        rate_per_sender=1.0,
        cpu_count=2,
        measure_started_at=3.0,
        warmup={"start_when_full": True, "extra_s": 1.0, "fill_s": 0.8, "full": True},
    )
    lat = report["latency_us"]
    assert lat["count"] == 100
    assert lat["p50"] == pytest.approx(1000, rel=0.01)
    assert lat["p99"] == pytest.approx(3000, rel=0.01)
    assert lat["min"] == pytest.approx(1000, rel=0.01)
    assert core.decode_histogram(lat["hdr"]).get_total_count() == 100
    assert report["schema"] == core.SCHEMA
    assert report["connect"]["count"] == 10
    assert report["failures"] == {"total": 1, "by_kind": {"lost": 1}, "lost_messages": 0}
    assert report["messages"]["intended"] == 200
    assert report["messages"]["achieved_rate"] == pytest.approx(19.5)
    assert report["load_generator"]["cpu_seconds"] == pytest.approx(4.5)
    assert report["load_generator"]["cpu_percent"] == pytest.approx(45.0)
    assert report["delivery"] == {"checked": True, "undelivered": 0, "pairs": 0}
    # the warm-up is reported apart: its saturation does not mark the run saturated
    assert report["measure_started_at"] == 3.0 and report["warmup_s"] == 2.0
    warmup = report["warmup"]
    assert warmup["full"] is True and warmup["fill_s"] == 0.8
    assert warmup["cpu_seconds"] == pytest.approx(1.25)
    assert warmup["saturated"] and warmup["saturation_reasons"] == ["cpu sample >= 90%"]
    assert not report["load_generator"]["saturated"]
    by_pid = report["load_generator"]["processes"]
    assert [p["measure_started_at"] for p in by_pid] == [None, None, 3.0]
    json.dumps(report)  # serialisable as is


def test_report_of_an_empty_run_has_nulls_not_errors() -> None:
    report = core.build_report(
        [],
        duration_s=0.0,
        options={},
        host="",
        started_at=0.0,
        stopped_at=0.0,
        users={},
        rate_per_sender=1.0,
    )
    assert report["latency_us"]["count"] == 0
    assert report["latency_us"]["p99"] is None
    assert report["delivery"]["checked"] is False
    assert report["measure_started_at"] is None and report["warmup_s"] is None
    assert report["warmup"]["saturated"] is False
    assert core.decode_histogram(report["latency_us"]["hdr"]).get_total_count() == 0


def test_core_does_not_import_locust_or_gevent() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import chat_core; "
        "bad = {'locust', 'gevent'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(LOADTEST)], check=True, timeout=60)


# --------------------------------------------------------------------------- smoke tests


def _locust_exe() -> str | None:
    here = Path(sys.executable).with_name("locust")
    return str(here) if here.exists() else shutil.which("locust")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without LOCUST_* settings that could change the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env.update(extra)
    return env


@pytest.fixture
def locust_exe() -> str:
    exe = _locust_exe()
    if (
        exe is None
        or subprocess.run(
            [exe, "--version"], check=False, capture_output=True, timeout=60
        ).returncode
    ):
        pytest.skip("locust is not installed (pip install .[loadtest])")
    return exe


def _start_server(engine: str) -> tuple[subprocess.Popen[str], int]:
    """Start chatd on a free port; return the process and the port it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd", "--port", "0", "--engine", engine],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(PYTHONPATH=str(SERVER_SRC)),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=20)
            seen.append(line)
            if "listening on " in line:
                return proc, int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
    except queue.Empty:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"chatd --engine {engine} did not report its port: {''.join(seen)!r}")


@pytest.fixture
def chatd(request: pytest.FixtureRequest) -> Iterator[int]:
    proc, port = _start_server(request.param)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


SMOKE_USERS = 20


def _run_locust(
    exe: str,
    port: int,
    tmp: Path,
    *extra: str,
    run_time: str = "4s",
    env: dict[str, str] | None = None,
) -> tuple[list[dict], dict]:
    """Run a short headless test; return (Locust's stats JSON, our histogram JSON)."""
    stats_base = tmp / "stats"
    hist_path = tmp / "latency.json"
    argv = [
        exe,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        f"127.0.0.1:{port}",
        "-u",
        str(SMOKE_USERS),
        "-r",
        str(SMOKE_USERS),
        "-t",
        run_time,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--json-file",
        str(stats_base),
        "--chat-hist-file",
        str(hist_path),
        "--chat-room-size",
        "10",
        "--chat-send-share",
        "0.5",
        "--chat-rate",
        "5",
        "--chat-timing-sample",
        "0.5",
        *extra,
    ]
    proc = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp,
        env=_clean_env(**(env or {})),
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"locust exited {proc.returncode}:\n{tail}"
    # Locust appends ".json" to --json-file.
    stats = json.loads(Path(f"{stats_base}.json").read_text())
    return stats, json.loads(hist_path.read_text())


def _check_run(stats: list[dict], hist: dict, users: int) -> None:
    by_name = {entry["name"]: entry for entry in stats}
    assert by_name["broadcast"]["num_requests"] > 0
    assert by_name["connect"]["num_requests"] == users
    assert by_name["join"]["num_requests"] == users
    assert sum(entry["num_failures"] for entry in stats) == 0, by_name

    lat = hist["latency_us"]
    assert hist["schema"] == core.SCHEMA
    assert lat["count"] == by_name["broadcast"]["num_requests"]
    assert core.decode_histogram(lat["hdr"]).get_total_count() == lat["count"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert hist["connect"]["count"] == users
    assert hist["failures"]["total"] == 0
    assert hist["delivery"]["undelivered"] == 0
    assert hist["messages"]["sent"] > 0
    assert hist["load_generator"]["cpu_seconds"] > 0
    # 20 users in rooms of 10 join within a second: the gate (on by default) never times out
    if hist["warmup"]["start_when_full"]:
        assert hist["warmup"]["full"] is True
        assert hist["warmup"]["users_expected"] == hist["warmup"]["users_joined"] == users


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor", "threaded"], indirect=True)
def test_headless_run_measures_broadcasts_without_failures(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    stats, hist = _run_locust(locust_exe, chatd, tmp_path)
    _check_run(stats, hist, SMOKE_USERS)
    # 20 users, rooms of 10, half of them send: exactly 10 senders at 5 msg/s each.
    assert hist["messages"]["senders"] == 10
    assert hist["received"]["timing_receivers"] == 10


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_processes_merge_worker_histograms(locust_exe: str, chatd: int, tmp_path: Path) -> None:
    stats, hist = _run_locust(locust_exe, chatd, tmp_path, "--processes", "2")
    _check_run(stats, hist, SMOKE_USERS)
    procs = hist["load_generator"]["processes"]
    assert sorted(p["role"] for p in procs) == ["master", "worker", "worker"]
    assert len({p["pid"] for p in procs}) == 3
    # each process measures itself (the workers are forked after import): they do the work
    master_cpu = sum(p["cpu_seconds"] for p in procs if p["role"] == "master")
    assert sum(p["cpu_seconds"] for p in procs if p["role"] == "worker") > master_cpu
    assert hist["messages"]["senders"] == 10
    # the master saw all workers' users joined, then started every worker's window at once
    starts = [p["measure_started_at"] for p in procs]
    assert None not in starts and max(starts) - min(starts) < 0.5, procs
    warmup = hist["warmup"]
    assert warmup["fill_s"] is not None
    assert hist["measure_started_at"] >= hist["started_at"] + warmup["fill_s"] + 1.0 - 0.01


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_warmup_measures_a_fixed_window_after_the_rooms_are_full(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    """The gate plus a fixed window, set through the ``LOCUST_`` variables.

    ``-t`` is only a cap here: ``--chat-measure-time`` must stop the run after 2 s of
    measuring, and the JSON's window, rates and counts must be that window's alone.
    """
    env = {"LOCUST_CHAT_WARMUP": "0.5", "LOCUST_CHAT_MEASURE_TIME": "2"}
    t0 = time.monotonic()
    stats, hist = _run_locust(locust_exe, chatd, tmp_path, run_time="60s", env=env)
    wall = time.monotonic() - t0
    _check_run(stats, hist, SMOKE_USERS)
    assert wall < 30, "--chat-measure-time did not stop the test"
    assert hist["options"]["warmup"] == 0.5 and hist["options"]["measure_time"] == 2.0
    warmup = hist["warmup"]
    assert warmup["start_when_full"] is True and warmup["extra_s"] == 0.5
    assert 0 <= warmup["fill_s"] < 10
    # measuring starts after the fill plus the warm-up (timer slack allowed)
    assert warmup["fill_s"] + 0.5 - 0.01 <= hist["warmup_s"] <= warmup["fill_s"] + 1.5
    assert hist["measure_started_at"] == pytest.approx(
        hist["started_at"] + hist["warmup_s"], abs=0.002
    )
    assert hist["duration_s"] == pytest.approx(2.0, abs=0.3)
    # 10 senders x 5 msg/s, scheduled from the gate: the counts are the window's
    msgs = hist["messages"]
    assert abs(msgs["intended"] - 50 * hist["duration_s"]) <= 10 + 2
    assert msgs["sent"] >= 0.95 * msgs["intended"]
    assert msgs["intended_rate"] == pytest.approx(50, rel=0.2)
    assert hist["received"]["early_messages"] == 0


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_without_the_gate_measuring_starts_at_test_start(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    extra = ("--no-chat-start-when-full", "--chat-warmup", "0")
    stats, hist = _run_locust(locust_exe, chatd, tmp_path, *extra)
    _check_run(stats, hist, SMOKE_USERS)
    assert hist["warmup"]["start_when_full"] is False
    assert hist["warmup"]["fill_s"] is None and hist["warmup"]["full"] is None
    assert hist["warmup_s"] == pytest.approx(0.0, abs=0.01)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_scenario_users_run_cleanly(locust_exe: str, chatd: int, tmp_path: Path) -> None:
    classes = ("ChatUser", "LurkerUser", "ChatterUser", "ChurnUser", "SlowReaderUser")
    stats, hist = _run_locust(locust_exe, chatd, tmp_path, "--chat-arrivals", "poisson", *classes)
    by_name = {entry["name"]: entry for entry in stats}
    assert sum(entry["num_failures"] for entry in stats) == 0, by_name
    assert by_name["broadcast"]["num_requests"] > 0
    # churn users reconnect, so there are at least as many connects as users
    assert by_name["connect"]["num_requests"] >= SMOKE_USERS
    assert hist["latency_us"]["count"] == by_name["broadcast"]["num_requests"]
    assert hist["users"]["by_class"]["SlowReaderUser"] == 1
