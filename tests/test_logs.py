"""chatd.logs: the JSON and text formats, the repeated-warning limit, and setup.

Pure and fast: records go to a StringIO or a list, and the limit's clock is a fake one
that the test moves by hand (no sleeps)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from chatd import logs
from chatd.logs import JsonFormatter, RepeatFilter, SuppressedSummary


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def record(
    msg: str = "client %s overflowed",
    *args: object,
    level: int = logging.WARNING,
    name: str = "chatd.reactor",
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)
    for key, value in (extra or {}).items():
        setattr(made, key, value)
    return made


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level restored after the test (setup replaces
    them, pytest's own included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logs._installed = None


# --- the JSON format -------------------------------------------------------------------


def test_json_line_carries_time_level_logger_message() -> None:
    rec = record("client %s overflowed", "10.0.0.1:4242")
    rec.created, rec.msecs = 1796668201.123456, 123.456
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-12-07T18:30:01.123Z",
        "level": "warning",
        "logger": "chatd.reactor",
        "message": "client 10.0.0.1:4242 overflowed",
    }


def test_json_time_is_rfc3339_utc_with_milliseconds() -> None:
    out = json.loads(JsonFormatter().format(record(level=logging.INFO)))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["time"])
    assert out["level"] == "info"


def test_json_extras_are_keys_of_their_own() -> None:
    extra = {"peer": "10.0.0.1", "queued": 123, "ratio": 0.5, "tags": ["a", 1], "ok": None}
    out = json.loads(JsonFormatter().format(record(extra=extra)))
    for key, value in extra.items():
        assert out[key] == value


def test_json_extras_through_a_real_logger(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.setup("debug", "json", stream)
    logging.getLogger("chatd.test").info("joined %s", "#lobby", extra={"nick": "alice"})
    out = json.loads(stream.getvalue())
    assert out["message"] == "joined #lobby"
    assert out["nick"] == "alice"
    assert out["logger"] == "chatd.test"
    # No standard LogRecord attribute leaks in as an extra.
    assert set(out) == {"time", "level", "logger", "message", "nick"}


def test_json_values_it_cannot_encode_become_str() -> None:
    class Peer:
        def __str__(self) -> str:
            return "peer<1>"

    circular: list[Any] = []
    circular.append(circular)
    extra = {
        "peer": Peer(),
        "nested": {"who": Peer()},
        "nan": float("nan"),
        "circular": circular,
        "tuple_keys": {(1, 2): "x"},
        "raw": b"\xff",
    }
    out = json.loads(JsonFormatter().format(record(extra=extra)))
    assert out["peer"] == "peer<1>"
    assert out["nested"] == {"who": "peer<1>"}
    assert out["nan"] == "nan"
    assert out["circular"] == "[[...]]"
    assert out["tuple_keys"] == "{(1, 2): 'x'}"
    assert out["raw"] == "b'\\xff'"


def test_json_never_raises_on_a_bad_value_or_bad_args() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    out = json.loads(JsonFormatter().format(record(extra={"bad": Hostile()})))
    assert out["bad"] == "<unprintable Hostile>"
    out = json.loads(JsonFormatter().format(record("%s and %s", "only one")))
    assert out["message"] == "%s and %s"
    assert "format_error" in out


def test_json_extra_may_not_replace_a_core_key() -> None:
    out = json.loads(JsonFormatter().format(record("hello", extra={"level": 3, "time": "x"})))
    assert out["level"] == "warning"
    assert out["extra_level"] == 3
    assert out["extra_time"] == "x"


def test_json_exception_is_one_string_key() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed", level=logging.ERROR, exc_info=sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert out["exception"].startswith("Traceback (most recent call last):")
    assert out["exception"].endswith("ValueError: boom")
    assert out["message"] == "failed"


def test_json_logger_exception_through_setup(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        # Not a chatd logger: conftest fails a test whose chatd loggers log an ERROR.
        logging.getLogger("tests.logs").exception("handler crashed")
    out = json.loads(stream.getvalue())
    assert out["level"] == "error"
    assert "ZeroDivisionError" in out["exception"]


# --- the text format -------------------------------------------------------------------


def test_text_format_is_unchanged(root_logger: logging.Logger) -> None:
    assert logs.TEXT_FORMAT == "%(asctime)s %(name)s %(levelname)s %(message)s"
    stream = io.StringIO()
    logs.setup("info", "text", stream)
    logging.getLogger("chatd.test").warning("client %s overflowed", "x", extra={"peer": 1})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} chatd\.test WARNING client x overflowed\n",
        stream.getvalue(),
    )


# --- the repeat filter -----------------------------------------------------------------


def limiter(**kw: Any) -> tuple[RepeatFilter, FakeClock, list[logging.LogRecord]]:
    clock, sink = FakeClock(), list[logging.LogRecord]()
    return RepeatFilter(clock=clock, sink=sink.append, **kw), clock, sink


def test_repeat_filter_passes_n_then_drops_and_counts() -> None:
    rf, clock, sink = limiter(per_window=5, window=60.0)
    passed = [rf.filter(record("client %s overflowed", i)) for i in range(100)]
    assert passed == [True] * 5 + [False] * 95
    assert rf.suppressed_total == 95
    assert sink == []  # nothing reported before the window ends


def test_repeat_filter_reports_count_when_the_window_ends() -> None:
    rf, clock, sink = limiter(per_window=5, window=60.0)
    for i in range(128):
        rf.filter(record("client %s overflowed", i))
    clock.advance(59.999)
    assert not rf.filter(record("client %s overflowed", "late"))
    assert sink == []
    clock.advance(0.001)
    assert rf.filter(record("client %s overflowed", "next"))  # a new window
    [summary] = sink
    assert isinstance(summary, SuppressedSummary)
    assert summary.getMessage() == "(suppressed 124 more like: client %s overflowed)"
    assert summary.suppressed == 124
    assert summary.levelno == logging.WARNING
    assert summary.name == "chatd.reactor"
    assert rf.filter(summary)  # the summary itself is never limited
    # The new window passes per_window again (the one above was the first).
    assert [rf.filter(record("client %s overflowed", i)) for i in range(5)] == [True] * 4 + [False]


def test_repeat_filter_keys_by_template_not_args() -> None:
    rf, _, _ = limiter(per_window=2)
    assert [rf.filter(record("client %s overflowed", f"peer{i}")) for i in range(3)] == [
        True,
        True,
        False,
    ]
    # Another template, logger or level is another key.
    assert rf.filter(record("client %s too slow", "peer0"))
    assert rf.filter(record("client %s overflowed", "peer0", name="chatd.irc"))
    assert rf.filter(record("client %s overflowed", "peer0", level=logging.ERROR))
    assert len(rf) == 4


def test_repeat_filter_never_limits_info_or_debug() -> None:
    rf, _, _ = limiter(per_window=1)
    for level in (logging.DEBUG, logging.INFO):
        assert all(rf.filter(record("same", level=level)) for _ in range(1000))
    assert len(rf) == 0
    assert rf.suppressed_total == 0


def test_repeat_filter_no_report_when_nothing_was_dropped() -> None:
    rf, clock, sink = limiter(per_window=5)
    for _ in range(5):
        rf.filter(record())
    clock.advance(61)
    assert rf.filter(record())
    assert rf.flush() == 0
    assert sink == []


def test_repeat_filter_flush_reports_now_and_keeps_the_limit() -> None:
    rf, _, sink = limiter(per_window=1)
    for _ in range(4):
        rf.filter(record("a %s"))
    for _ in range(3):
        rf.filter(record("b %s", level=logging.ERROR))
    assert rf.flush() == 5
    assert sorted(r.getMessage() for r in sink) == [
        "(suppressed 2 more like: b %s)",
        "(suppressed 3 more like: a %s)",
    ]
    assert {r.levelno for r in sink} == {logging.WARNING, logging.ERROR}
    assert not rf.filter(record("a %s"))  # still inside its window
    assert rf.flush() == 1
    assert rf.flush() == 0


def test_repeat_filter_key_table_is_bounded() -> None:
    rf, clock, sink = limiter(per_window=1, max_keys=100)
    for _ in range(3):
        rf.filter(record("first %s"))  # 2 dropped, then evicted below
    for i in range(10_000):
        clock.advance(0.001)
        rf.filter(record(f"distinct template {i}"))
    assert len(rf) == 100
    # The evicted key's count was reported, not lost.
    assert [r.getMessage() for r in sink] == ["(suppressed 2 more like: first %s)"]
    # An evicted key starts afresh.
    assert rf.filter(record("first %s"))


def test_repeat_filter_without_a_sink_only_counts() -> None:
    rf = RepeatFilter(per_window=1, clock=FakeClock())
    rf.filter(record())
    rf.filter(record())
    assert rf.suppressed_total == 1
    assert rf.flush() == 1


# --- setup -----------------------------------------------------------------------------


def test_setup_twice_leaves_one_handler(root_logger: logging.Logger) -> None:
    root_logger.addHandler(logging.NullHandler())
    logs.setup("info", "text", io.StringIO())
    assert len(root_logger.handlers) == 1
    stream = io.StringIO()
    logs.setup("debug", "json", stream)
    assert len(root_logger.handlers) == 1
    assert root_logger.level == logging.DEBUG
    logging.getLogger("chatd.test").debug("hi")
    assert json.loads(stream.getvalue())["message"] == "hi"


def test_set_level_changes_only_the_level(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    [handler] = root_logger.handlers
    logs.set_level("WARNING")
    assert root_logger.level == logging.WARNING
    assert root_logger.handlers == [handler]
    logging.getLogger("chatd.test").info("hidden")
    assert stream.getvalue() == ""
    with pytest.raises(ValueError):
        logs.set_level("loud")


def test_setup_refuses_unknown_format_or_level(root_logger: logging.Logger) -> None:
    with pytest.raises(ValueError):
        logs.setup("info", "xml")
    with pytest.raises(ValueError):
        logs.setup("verbose", "json")


def test_setup_limits_warnings_and_summary_reports_them(root_logger: logging.Logger) -> None:
    stream, clock = io.StringIO(), FakeClock()
    logs.setup("info", "json", stream, clock=clock)
    log = logging.getLogger("chatd.reactor")
    for i in range(1000):
        log.warning("client %s overflowed", f"10.0.0.{i % 250}")
    for i in range(10):
        log.info("joined %s", i)  # never limited
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 5 + 10
    clock.advance(60)
    log.warning("client %s overflowed", "10.0.0.1")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    summary, after = lines[-2:]
    assert summary["message"] == "(suppressed 995 more like: client %s overflowed)"
    assert summary["suppressed"] == 995
    assert summary["level"] == "warning"
    assert summary["logger"] == "chatd.reactor"
    assert after["message"] == "client 10.0.0.1 overflowed"
    # summary() reports what is still held back, e.g. at exit.
    for _ in range(10):
        log.warning("client %s overflowed", "x")
    assert logs.summary() == 6
    assert json.loads(stream.getvalue().splitlines()[-1])["suppressed"] == 6
    assert logs.summary() == 0


def test_setup_again_reports_what_the_old_filter_held(root_logger: logging.Logger) -> None:
    old = io.StringIO()
    logs.setup("info", "text", old, clock=FakeClock())
    for _ in range(7):
        logging.getLogger("chatd.x").warning("again")
    logs.setup("info", "text", io.StringIO())
    assert (
        old.getvalue().splitlines()[-1].endswith("chatd.x WARNING (suppressed 2 more like: again)")
    )


def test_summary_before_setup_is_zero(root_logger: logging.Logger) -> None:
    assert logs.summary() == 0
