"""Tests for the Locust load test (``loadtest/``).

Two layers:

* Unit tests of the sans-IO modules ``loadtest/chat_core.py`` (schedules, identities, the
  JSON report), the load library ``chatload`` as the load test uses it (framing, payloads,
  sequence checks, the line dialect; its own tests are in ``tests/loadtest/``),
  ``chat_options.py`` (option parsing) and ``chat_verdict.py`` (the end-of-run
  verdict). They import ``hdrh`` but never Locust.
* Smoke tests that start ``chatd`` and run ``locust -f loadtest/chat.py --headless`` as
  *subprocesses* for a few seconds, then check Locust's JSON, our report file and the
  printed verdict. Never import locust here: importing it monkey-patches ``socket``,
  ``threading`` and ``selectors`` for the whole test process.

The IRC dialect has its own file (``test_loadtest_irc.py``), and so do the command-line
behaviours: bad hosts, exit codes, the web UI tab, custom scenarios
(``test_loadtest_cli.py``). Both reuse the helpers here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatwire import Server

REPO = Path(__file__).resolve().parent.parent
LOADTEST = REPO / "loadtest"
LOCUSTFILE = LOADTEST / "chat.py"


# The load test's sans-IO modules import each other as siblings, as Locust loads them.
if str(LOADTEST) not in sys.path:
    sys.path.insert(0, str(LOADTEST))

import chat_core as core  # noqa: E402
import chat_options as options  # noqa: E402
import chat_verdict as verdict  # noqa: E402
import chatload  # noqa: E402
from chatload import line as line_dialect  # noqa: E402

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
    splitter = chatload.LineSplitter()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out.extend(splitter.feed(data[start:end]))
    assert out == lines
    assert splitter.pending == 0


def test_line_splitter_strips_cr_and_keeps_the_partial_tail() -> None:
    splitter = chatload.LineSplitter()
    assert splitter.feed(b"a\r\nb\npar") == [b"a", b"b"]
    assert splitter.pending == 3
    assert splitter.feed(b"tial\n") == [b"partial"]


def test_line_splitter_refuses_an_endless_line() -> None:
    splitter = chatload.LineSplitter()
    with pytest.raises(chatload.ProtocolError):
        for _ in range(chatload.MAX_PARTIAL_LINE // 1000 + 2):
            splitter.feed(b"x" * 1000)


# --------------------------------------------------------------------------- payloads


@given(
    seq=st.integers(min_value=0, max_value=10**9),
    stamp=st.integers(min_value=0, max_value=2**53),
    size=st.integers(min_value=0, max_value=3000),
)
def test_message_round_trips_through_the_server_stamp(seq: int, stamp: int, size: int) -> None:
    line = line_dialect.encode_message("labc1x", seq, stamp, size)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line[:-1]
    head = len(b"LT labc1x %d %d" % (seq, stamp))
    # exactly the size asked for, except that the header always fits and a pad needs a
    # separator plus one byte: never longer than asked unless the header alone is
    assert len(text) == (size if size >= head + 2 else head)
    kind, msg = line_dialect.classify(b"labc1x: " + text)
    assert kind is chatload.LineKind.MESSAGE
    assert msg == chatload.Message("labc1x", "labc1x", seq, stamp)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"* alice joined #load0", chatload.LineKind.NOTICE),
        (b"* alice: LT x 1 2", chatload.LineKind.NOTICE),
        (b"! unknown command", chatload.LineKind.ERROR),
        (b"alice: hello there", chatload.LineKind.OTHER),
        (b"alice (private): LT alice 1 2", chatload.LineKind.OTHER),
        (b"no separator", chatload.LineKind.OTHER),
    ],
)
def test_classify_tells_our_messages_from_everything_else(line: bytes, kind: Any) -> None:
    assert line_dialect.classify(line) == (kind, None)


def test_classify_rejects_a_mangled_load_test_message() -> None:
    with pytest.raises(chatload.ProtocolError):
        line_dialect.classify(b"alice: LT alice notanumber 5")
    with pytest.raises(chatload.ProtocolError):
        line_dialect.classify(b"alice: LT alice")


# --------------------------------------------------------------------------- handshake


def test_registration_confirmation_must_name_our_nick() -> None:
    nick = "labc17"
    confirms = line_dialect.confirms_registration
    assert confirms(f"* you are {nick}, in #lobby (3 here)", nick)
    assert confirms(f"* Welcome {nick.upper()}! You are in #lobby", nick)
    assert not confirms("* welcome to chatd", nick)
    assert not confirms(f"* {nick}x joined #lobby", nick)
    assert not confirms(f"! {nick} is taken", nick)


def test_join_confirmation_needs_the_room_and_us() -> None:
    nick = "labc17"
    confirms = line_dialect.confirms_join
    assert confirms("* you joined #load3 (10 here)", nick, "#load3")
    assert confirms(f"* {nick} joined load3", nick, "#load3")
    # another member moving into our target room must not count as our join
    assert not confirms("* bob left #lobby for #load3", nick, "#load3")
    assert not confirms("* you joined #load30 (1 here)", nick, "#load3")
    assert not confirms(f"{nick}: you joined #load3", nick, "#load3")


def test_line_dialect_registers_retries_a_taken_nick_and_joins() -> None:
    d = line_dialect.LineDialect()
    assert d.register("labc1") == b"labc1\n"
    assert d.handshake_event(b"* welcome to chatd; your nickname?") is None
    refused = d.handshake_event(b"! nickname taken")
    assert refused == chatload.RegisterRefused("nickname taken", retry=True)
    assert d.renick("labc2") == b"labc2\n"
    assert d.handshake_event(b"* you are labc2, in #lobby") == chatload.Registered("labc2")
    assert d.join("#load0") == b"/join #load0\n"
    assert d.handshake_event(b"* bob left #lobby for #load0") is None
    assert d.handshake_event(b"* you joined #load0 (2 here)") == chatload.Joined("#load0")
    assert d.chat(b"LT labc2 0 1") == b"LT labc2 0 1\n"
    with pytest.raises(ValueError):
        d.chat(b"/quit")  # would be a command, not chat
    with pytest.raises(ValueError):
        d.chat(b"two\nlines")


def test_line_dialect_reports_a_refused_join() -> None:
    d = line_dialect.LineDialect()
    d.register("labc1")
    d.handshake_event(b"* you are labc1, in #lobby")
    d.join("#load0")
    assert d.handshake_event(b"! no such room") == chatload.JoinRefused("no such room")


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:4040", ("127.0.0.1", 4040)),
        ("tcp://localhost:5000/", ("localhost", 5000)),
        ("example.org", ("example.org", 4040)),
        ("[::1]:4041", ("::1", 4041)),
        (":4042", ("127.0.0.1", 4042)),
        ("irc://irc.example:6697", ("irc.example", 6697)),
    ],
)
def test_parse_host_accepts_the_forms_people_type(host: str, expected: tuple[str, int]) -> None:
    assert core.parse_host(host) == expected


def test_parse_host_takes_the_dialects_default_port() -> None:
    assert core.parse_host("localhost", default_port=6667) == ("localhost", 6667)


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "  ",
        "127.0.0.1:abc",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "h:4040/path",
        "::1",
        "[::1",
        "[::1]x",
        "my host:4040",
        "127.0.0.1:",
    ],
)
def test_parse_host_refuses_what_would_fail_every_connect(host: str | None) -> None:
    with pytest.raises(ValueError, match="host"):
        core.parse_host(host)


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


def test_nicks_are_short_valid_and_distinct_across_workers() -> None:
    nicks = {core.make_nick("a1b", w, n, workers=50) for w in range(50) for n in range(1, 200)}
    assert len(nicks) == 50 * 199
    # nine characters (RFC 2812 NICKLEN, ngircd's default), lower-case letters and digits
    assert all(len(nick) <= core.NICK_MAX and nick[0] == "l" for nick in nicks)
    assert all(nick.isalnum() and nick == nick.lower() for nick in nicks)


def test_nick_serials_fill_nine_characters_then_refuse() -> None:
    last = 36**5 - 1
    assert core.make_nick("zzz", 0, last) == "lzzzzzzzz"
    with pytest.raises(ValueError, match="exhausted"):
        core.make_nick("zzz", 0, last + 1)
    with pytest.raises(ValueError):
        core.make_nick("toolong", 0, 1)


@given(st.integers(min_value=0, max_value=10**12))
def test_base36_round_trips(n: int) -> None:
    assert int(core.base36(n), 36) == n


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("0", 0.0),
        (" 2 s ", 2.0),
        (".5", 0.5),
        (3, 3.0),
    ],
)
def test_durations_take_locusts_forms_and_fractions(text: Any, seconds: float) -> None:
    assert core.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1", "1x", "1m30", "30s5", "s", -2.0])
def test_malformed_durations_are_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        core.parse_duration(text)


def test_to_fraction_rejects_shares_outside_zero_to_one() -> None:
    with pytest.raises(ValueError):
        core.to_fraction(1.5)
    assert core.to_fraction(0.1) == Fraction(1, 10)


# --------------------------------------------------------------------------- checks


def test_sequence_tracker_reports_gaps_and_reorders_once() -> None:
    tracker = chatload.SequenceTracker()
    ok, lost, reordered = chatload.Verdict.OK, chatload.Verdict.LOST, chatload.Verdict.REORDERED
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


def test_report_names_the_target_and_dialect() -> None:
    report = core.build_report(
        [],
        duration_s=0.0,
        options={},
        host="h:1",
        started_at=0.0,
        stopped_at=0.0,
        users={},
        rate_per_sender=1.0,
        label="ngircd",
        dialect="irc",
    )
    assert (report["host"], report["label"], report["dialect"]) == ("h:1", "ngircd", "irc")
    unlabelled = core.build_report(
        [],
        duration_s=0.0,
        options={},
        host="h:1",
        started_at=0.0,
        stopped_at=0.0,
        users={},
        rate_per_sender=1.0,
    )
    assert unlabelled["label"] is None and unlabelled["dialect"] == "line"


def test_sans_io_modules_do_not_import_locust_or_gevent() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import chat_core, chatload.line, chatload.irc, chatload.ws, chat_options, chat_verdict; "
        "bad = {'locust', 'gevent'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(LOADTEST)], check=True, timeout=60)


# --------------------------------------------------------------------------- options


def _parser() -> Any:
    """A parser like Locust's (``configargparse``, which knows ``env_var``) with our options."""
    configargparse = pytest.importorskip("configargparse")
    parser = configargparse.ArgumentParser()
    options.add_options(parser)
    return parser


def test_option_help_is_readable_as_is() -> None:
    """The web UI shows help texts verbatim: no ``%(default)s``, no ``%`` at all."""
    parser = _parser()
    ours = [a for a in parser._actions if any(o.startswith("--chat-") for o in a.option_strings)]
    assert len(ours) == len(options.Settings.__dataclass_fields__)
    for action in ours:
        assert action.help and "%" not in action.help, action.option_strings
        assert "Default" in action.help, action.option_strings
    parser.format_help()  # and argparse can still render them


def test_defaults_parse_to_the_settings_defaults() -> None:
    parsed = options.Settings.from_options(_parser().parse_args([]))
    assert parsed == options.Settings()


def test_time_options_take_units_on_the_command_line_and_in_the_environment() -> None:
    args = _parser().parse_args(["--chat-warmup", "500ms", "--chat-measure-time", "1m30s"])
    settings = options.Settings.from_options(args)
    assert settings.warmup == 0.5 and settings.measure_time == 90.0
    # the web UI converts a submitted value with the type the option had: a string
    web = argparse.Namespace(**vars(args))
    web.chat_handshake_timeout = "45s"
    assert options.Settings.from_options(web).handshake_timeout == 45.0


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--chat-warmup", "soon"], "--chat-warmup"),
        (["--chat-handshake-timeout", "0"], "--chat-handshake-timeout"),
        (["--chat-send-share", "1.5"], "--chat-send-share"),
        (["--chat-rate", "0"], "--chat-rate"),
        (["--chat-max-p99-ms", "-1"], "--chat-max-p99-ms"),
        (["--chat-dialect", "irc", "--chat-payload", "401"], "--chat-payload"),
        (["--chat-tls-insecure"], "--chat-tls"),
        (["--chat-tls", "--chat-tls-ca", "/nonexistent/ca.pem"], "--chat-tls-ca"),
    ],
)
def test_bad_options_are_refused_naming_the_option(argv: list[str], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        options.Settings.from_options(_parser().parse_args(argv))


def test_irc_payloads_fit_512_byte_lines() -> None:
    settings = options.Settings.from_options(
        _parser().parse_args(["--chat-dialect", "irc", "--chat-payload", "400"])
    )
    assert settings.dialect_class.max_payload == 400


# --------------------------------------------------------------------------- verdict


def _report(**changes: Any) -> dict[str, Any]:
    """A passing report (as ``build_report`` makes it), with ``changes`` applied by path."""
    hist = core.new_histogram()
    for value in (800, 900, 1000, 5000):
        hist.record_value(value)
    snap = core.Snapshot(
        hist=hist.encode().decode("ascii"),
        counters={**dict.fromkeys(core.COUNTERS, 0), "sent": 10, "intended": 10},
        cpu_seconds=0.5,
        wall_seconds=5.0,
        role="local",
        delivery=core.Delivery(),
    )
    report = core.build_report(
        [snap],
        duration_s=5.0,
        options={},
        host="127.0.0.1:4040",
        started_at=1.0,
        stopped_at=7.0,
        users={},
        rate_per_sender=1.0,
        measure_started_at=1.5,
        warmup={"users_expected": 4, "users_joined": 4},
        label="reactor",
    )
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = report
        for parent in parents:
            node = node[parent]
        node[key] = value
    return report


def test_a_clean_run_passes_and_its_block_shows_every_deciding_number() -> None:
    report = _report()
    judgement = verdict.judge(report)
    assert judgement.passed and judgement.exit_code == 0
    block = verdict.summary(report, judgement)
    lat = report["latency_us"]
    for expected in (
        "127.0.0.1:4040 (reactor, line dialect)",
        f"p50 {lat['p50']}",
        f"p99 {lat['p99']}",
        "(4 samples)",
        "sent 10 of 10 intended",
        "lost 0",
        "undelivered 0",
        "not saturated",
        "PASS",
    ):
        assert expected in block, (expected, block)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"latency_us__count": 0}, "no broadcast samples"),
        ({"measure_started_at": None}, "nothing measured"),
        ({"failures__total": 2, "failures__by_kind": {"connect": 2}}, "2 failures (connect 2)"),
        ({"failures__lost_messages": 3}, "3 messages lost"),
        ({"delivery__undelivered": 4}, "4 messages undelivered"),
        (
            {"load_generator__saturated": True, "load_generator__saturation_reasons": ["x"]},
            "load generator saturated (x)",
        ),
        ({"warmup__users_joined": 0}, "0 of 4 users joined"),
    ],
)
def test_loss_saturation_and_missing_samples_fail_the_run(
    changes: dict[str, Any], reason: str
) -> None:
    judgement = verdict.judge(_report(**changes))
    assert not judgement.passed and judgement.exit_code != 0
    assert any(reason in r for r in judgement.reasons), judgement.reasons
    assert reason in judgement.text()


def test_the_p99_gate_fails_only_above_its_limit() -> None:
    report = _report()
    p99_ms = report["latency_us"]["p99"] / 1000.0
    assert verdict.judge(report, max_p99_ms=p99_ms * 2).passed
    assert verdict.judge(report, max_p99_ms=0).passed  # 0: no gate
    failed = verdict.judge(report, max_p99_ms=p99_ms / 2)
    assert not failed.passed and "--chat-max-p99-ms" in failed.text()


def test_web_rows_say_whether_the_run_is_over() -> None:
    report = _report()
    judgement = verdict.judge(report)
    rows = {s: verdict.web_rows(report, judgement, s) for s in ("idle", "running", "final")}
    assert [r["metric"] for r in rows["final"]][-1] == "verdict"
    assert rows["final"][-1]["value"] == "PASS"
    assert rows["running"][-1]["value"] == "(running) so far: PASS"
    assert "no test" in rows["idle"][-1]["value"]


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
    return _require_locust()


def _require_locust() -> str:
    """The locust command, or skip the test (with the reason) when it is not installed."""
    exe = _locust_exe()
    if (
        exe is None
        or subprocess.run(
            [exe, "--version"], check=False, capture_output=True, timeout=60
        ).returncode
    ):
        pytest.skip("locust is not installed (pip install .[loadtest])")
    return exe


@pytest.fixture
def chatd(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> int:
    """The port of a chatd of the engine the test names; conftest's ``start_server`` stops
    it and fails the test if it exited non-zero or wrote a traceback."""
    return start_server(request.param).port


SMOKE_USERS = 20


def _run_locust(
    exe: str,
    port: int,
    tmp: Path,
    *extra: str,
    run_time: str = "60s",
    measure_time: str | None = "2s",
    env: dict[str, str] | None = None,
    users: int = SMOKE_USERS,
    locustfile: Path = LOCUSTFILE,
    expect_rc: int | None = 0,
    host: str | None = None,
) -> tuple[list[dict], dict, str]:
    """Run a short headless test; return (Locust's stats JSON, our report JSON, its output).

    The run measures ``measure_time`` after the rooms are full (``--chat-measure-time``;
    None: not set, so ``-t`` decides), so a machine busy with other work fills the rooms
    more slowly but still measures the same window; ``run_time`` (``-t``) is only a cap.
    The drain may take up to 5 s (it ends as soon as the rooms are quiet). ``expect_rc``:
    the exit code the run must end with (None: any). ``host``: the ``--host`` to give
    instead of ``127.0.0.1:PORT`` (e.g. a list of several).
    """
    if measure_time is not None and "--chat-measure-time" not in extra:
        extra = ("--chat-measure-time", measure_time, *extra)
    stats_base = tmp / "stats"
    hist_path = tmp / "latency.json"
    argv = [
        exe,
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        host or f"127.0.0.1:{port}",
        "-u",
        str(users),
        "-r",
        str(users),
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
        "--chat-drain-timeout",
        "5s",
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
    output = proc.stdout + proc.stderr
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f"locust exited {proc.returncode}:\n{output[-3000:]}"
    # Locust appends ".json" to --json-file.
    stats = json.loads(Path(f"{stats_base}.json").read_text())
    return stats, json.loads(hist_path.read_text()), output


def _verdict_block(output: str) -> str:
    """The verdict block a run printed (exactly one)."""
    assert output.count("--- chat load test ") == 1, output[-3000:]
    return output.split("--- chat load test ", 1)[1].split("\n-----", 1)[0]


def _check_run(stats: list[dict], hist: dict, users: int, output: str = "") -> None:
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
    if output:
        block = _verdict_block(output)
        assert f"p99 {lat['p99']}" in block and "PASS" in block, block


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor", "threaded"], indirect=True)
def test_headless_run_measures_broadcasts_without_failures(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    stats, hist, out = _run_locust(locust_exe, chatd, tmp_path, "--chat-label", "smoke")
    _check_run(stats, hist, SMOKE_USERS, out)
    assert hist["label"] == "smoke" and hist["dialect"] == "line"
    # 20 users, rooms of 10, half of them send: exactly 10 senders at 5 msg/s each.
    assert hist["messages"]["senders"] == 10
    assert hist["received"]["timing_receivers"] == 10


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_processes_merge_worker_histograms(locust_exe: str, chatd: int, tmp_path: Path) -> None:
    stats, hist, out = _run_locust(locust_exe, chatd, tmp_path, "--processes", "2")
    _check_run(stats, hist, SMOKE_USERS, out)
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
    env = {"LOCUST_CHAT_WARMUP": "500ms", "LOCUST_CHAT_MEASURE_TIME": "2s"}
    t0 = time.monotonic()
    stats, hist, _ = _run_locust(
        locust_exe, chatd, tmp_path, run_time="60s", measure_time=None, env=env
    )
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
    # never shorter; longer only by the stop timer's lateness on a busy machine
    assert 2.0 - 0.01 <= hist["duration_s"] <= 3.0
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
    stats, hist, _ = _run_locust(locust_exe, chatd, tmp_path, *extra, measure_time="4s")
    _check_run(stats, hist, SMOKE_USERS)
    assert hist["warmup"]["start_when_full"] is False
    assert hist["warmup"]["fill_s"] is None and hist["warmup"]["full"] is None
    assert hist["warmup_s"] == pytest.approx(0.0, abs=0.01)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("chatd", ["reactor"], indirect=True)
def test_scenario_users_run_cleanly(locust_exe: str, chatd: int, tmp_path: Path) -> None:
    classes = ("ChatUser", "LurkerUser", "ChatterUser", "ChurnUser", "SlowReaderUser")
    stats, hist, _ = _run_locust(
        locust_exe, chatd, tmp_path, "--chat-arrivals", "poisson", *classes
    )
    by_name = {entry["name"]: entry for entry in stats}
    assert sum(entry["num_failures"] for entry in stats) == 0, by_name
    assert by_name["broadcast"]["num_requests"] > 0
    # churn users reconnect, so there are at least as many connects as users
    assert by_name["connect"]["num_requests"] >= SMOKE_USERS
    assert hist["latency_us"]["count"] == by_name["broadcast"]["num_requests"]
    assert hist["users"]["by_class"]["SlowReaderUser"] == 1
