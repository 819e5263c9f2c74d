"""Logging for a server run as a service: one format for people, one for log shippers,
and a limit on repeated warnings.

Why this module exists
----------------------
* **Log shippers read JSON.** journald, Vector, Fluent Bit and Loki all take one JSON
  object per line without a parsing rule per program; a text line has to be re-parsed by
  a regular expression that breaks the day a message holds a space in the wrong place.
  ``--log-format json`` writes :class:`JsonFormatter`'s lines; ``text`` (the default)
  stays exactly the line chatd always wrote, so people and existing greps see no change.
* **A hostile client must not own the log.** One client can make the server warn
  thousands of times a second (an overflowing output buffer, a flood of bad lines,
  refused connections from one address). Every such line is a ``write()`` to stderr on
  the reactor's only thread, and a disk filled by one message. :class:`RepeatFilter`
  lets the first few records of each kind through, counts the rest, and later says how
  many it dropped, so the log stays readable, cheap and bounded whatever a peer does.

Theory of operation
-------------------
:func:`setup` configures the root logger once per process, and again on a reload: it
replaces every handler the root logger has with one ``StreamHandler`` (``stderr`` unless
told otherwise) carrying the chosen formatter and a fresh :class:`RepeatFilter`.
:func:`set_level` changes the level alone. :func:`summary` reports what the installed
filter is still holding back (call it before exiting; nothing is registered with
``atexit``, so the caller decides when, and tests never see it run late).

The rate limit keys a record by ``(logger name, msg template, level)``: the template,
not the formatted message, so ``log.warning("client %s overflowed", peer)`` from a
thousand peers is one key. Only WARNING and above are limited; DEBUG and INFO, which an
operator asks for on purpose, always pass. A key lets ``per_window`` records through per
``window`` seconds, counted from its first record; the rest are dropped and counted.
When the next record of a key arrives after its window ended, or when :meth:`flush` is
called, or when the key is evicted from the bounded table, the count is reported as a
**separate record** (a :class:`SuppressedSummary`) handed to the same handler just
before the record that ended the window: same logger, same level, the message
``(suppressed 123 more like: client %s overflowed)`` and, as an extra field,
``suppressed=123``. A separate record rather than a prefix, so that the record that
passes is never altered (other handlers, such as pytest's, see the same object) and the
summary is a line a shipper can count on its own.

The key table holds at most ``max_keys`` keys (1,000 by default); a new key beyond that
evicts the least recently started one (reporting its count if it had one), so a flood of
distinct templates costs a bounded amount of memory.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TextIO

__all__ = [
    "LOG_FORMATS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "RepeatFilter",
    "SuppressedSummary",
    "set_level",
    "setup",
    "summary",
]

#: The values of ``--log-format``.
LOG_FORMATS: Final = ("text", "json")

#: The text format, unchanged since chatd's first release (people and scripts grep it).
TEXT_FORMAT: Final = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: Attributes every LogRecord has (and the two a Formatter adds): anything else on a
#: record came from ``extra=`` and is written as a key of its own.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime", "taskName"}

#: Keys of a JSON line that an ``extra=`` field may not replace; such a field is written
#: as ``extra_<name>`` instead.
_CORE_KEYS: Final = frozenset({"time", "level", "logger", "message", "exception", "stack"})


def _safe_str(value: object) -> str:
    """``str(value)``, or a stand-in when the object's ``__str__`` raises: a log line
    must never fail because of what it was asked to show."""
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _json_value(value: object) -> Any:
    """``value`` as it will be encoded: itself when JSON can encode it (unknown objects
    nested inside become their ``str()``), else its ``str()``. NaN and infinities are
    not JSON, so they become strings too."""
    try:
        json.dumps(value, default=_safe_str, allow_nan=False)
    except Exception:  # circular, NaN, non-string dict keys, a raising default...
        return _safe_str(value)
    return value


def _rfc3339(created: float, msecs: float) -> str:
    """A record's time as RFC 3339 UTC with milliseconds: ``2026-12-07T18:30:01.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``time`` (RFC 3339 UTC, milliseconds), ``level`` (lowercase), ``logger``,
    ``message`` (the formatted message), then every ``extra=`` field under its own name
    (``extra_<name>`` if it would replace one of these keys), then ``exception`` (the
    formatted traceback, one string) and ``stack`` when the record carries them.
    Values JSON cannot encode are written as their ``str()``. :meth:`format` never
    raises: a message whose arguments do not fit its template is written as the
    template with a ``format_error`` key.
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # a last resort; _format already guards each part
            return json.dumps(
                {
                    "time": _rfc3339(time.time(), 0.0),
                    "level": "error",
                    "logger": "chatd.logs",
                    "message": _safe_str(getattr(record, "msg", "")),
                    "format_error": _safe_str(exc),
                }
            )

    def _format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created, record.msecs),
            "level": _safe_str(record.levelname).lower(),
            "logger": _safe_str(record.name),
        }
        try:
            out["message"] = record.getMessage()
        except Exception as exc:
            out["message"] = _safe_str(record.msg)
            out["format_error"] = _safe_str(exc)
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS:
                continue
            name = f"extra_{key}" if key in _CORE_KEYS or key == "format_error" else key
            out[name] = _json_value(value)
        if record.exc_info:
            # Cached on the record as the stdlib Formatter does, for other handlers.
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=_safe_str, allow_nan=False)


class SuppressedSummary(logging.LogRecord):
    """The record that reports how many records of one key :class:`RepeatFilter`
    dropped. Its own type, so the filter always lets it through; its ``suppressed``
    attribute (the count) is an ``extra`` field in JSON lines."""

    suppressed: int


@dataclass(slots=True)
class _Window:
    """One key's current window: when it started, how many passed and were dropped."""

    start: float
    passed: int = 0
    dropped: int = 0


_Key = tuple[str, str, int]


#: An ``extra=`` key: a record carrying it true is never held back (what the operator
#: asked for, such as a reload's outcome: one record per SIGHUP, never a flood).
UNLIMITED = "unlimited"


class RepeatFilter(logging.Filter):
    """Let at most ``per_window`` records of a kind through per ``window`` seconds.

    A kind is ``(logger name, msg template, level)``; only WARNING and above are
    limited. Dropped records are counted, and the count is reported as a
    :class:`SuppressedSummary` given to ``sink`` (``setup`` passes the handler's
    ``handle``) when the key's next record arrives after its window, when the key is
    evicted from the table of at most ``max_keys`` keys, or on :meth:`flush`. Without a
    sink the counts are kept (:attr:`suppressed_total`) but no summary is written.

    ``clock`` is any monotonic clock in seconds; tests pass a fake one. Thread-safe: the
    threaded engine logs from many threads.
    """

    def __init__(
        self,
        per_window: int = 5,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
        sink: Callable[[logging.LogRecord], object] | None = None,
    ) -> None:
        super().__init__()
        if per_window < 1 or window <= 0 or max_keys < 1:
            raise ValueError("per_window and max_keys must be >= 1 and window > 0")
        self.per_window = per_window
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.sink = sink
        #: Records dropped since this filter was made, reported or not.
        self.suppressed_total = 0
        self._keys: OrderedDict[_Key, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of keys in the table."""
        return len(self._keys)

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < logging.WARNING
            or isinstance(record, SuppressedSummary)
            or getattr(record, UNLIMITED, False)
        ):
            return True
        template = record.msg if isinstance(record.msg, str) else _safe_str(record.msg)
        key = (record.name, template, record.levelno)
        due: list[tuple[_Key, int]] = []
        with self._lock:
            now = self.clock()
            state = self._keys.get(key)
            if state is None:
                while len(self._keys) >= self.max_keys:
                    old_key, old = self._keys.popitem(last=False)
                    if old.dropped:
                        due.append((old_key, old.dropped))
                state = self._keys[key] = _Window(now)
            elif now - state.start >= self.window:
                if state.dropped:
                    due.append((key, state.dropped))
                state.start, state.passed, state.dropped = now, 0, 0
                self._keys.move_to_end(key)
            if state.passed < self.per_window:
                state.passed += 1
                passing = True
            else:
                state.dropped += 1
                self.suppressed_total += 1
                passing = False
        self._report(due)  # outside the lock: the sink comes back through filter()
        return passing

    def flush(self) -> int:
        """Report every key's dropped records now (each key keeps its window, so the
        limit goes on). Returns how many dropped records were reported."""
        with self._lock:
            due = [(key, state.dropped) for key, state in self._keys.items() if state.dropped]
            for state in self._keys.values():
                state.dropped = 0
        self._report(due)
        return sum(count for _, count in due)

    def _report(self, due: list[tuple[_Key, int]]) -> None:
        """Give one :class:`SuppressedSummary` per ``(key, count)`` to the sink."""
        if self.sink is None:
            return
        for (name, template, level), count in due:
            record = SuppressedSummary(
                name, level, "", 0, "(suppressed %d more like: %s)", (count, template), None
            )
            record.suppressed = count
            try:
                self.sink(record)
            except Exception:  # a handler reports its own errors; never raise into a caller
                pass


#: What :func:`setup` installed last, for :func:`summary` and the next :func:`setup`.
_installed: tuple[logging.Handler, RepeatFilter] | None = None


def _level(level: str) -> int:
    """The number of a level name (any case); a ValueError for an unknown one."""
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def setup(
    level: str,
    fmt: str,
    stream: TextIO | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    per_window: int = 5,
    window: float = 60.0,
) -> None:
    """Configure the root logger: level ``level`` (``"info"``, any case), format ``fmt``
    (one of :data:`LOG_FORMATS`), written to ``stream`` (``sys.stderr`` when None, read
    at call time), with a :class:`RepeatFilter` on the handler.

    Replaces every handler the root logger has (closing the one a previous call made),
    so calling it again on a reload leaves exactly one. What the previous filter still
    held back is reported before it goes.
    """
    global _installed
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {LOG_FORMATS}")
    number = _level(level)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    limiter = RepeatFilter(per_window, window, clock=clock, sink=handler.handle)
    handler.addFilter(limiter)

    root = logging.getLogger()
    previous = _installed
    if previous is not None:
        previous[1].flush()
    for old in list(root.handlers):
        root.removeHandler(old)
        if previous is not None and old is previous[0]:
            old.close()
    root.addHandler(handler)
    root.setLevel(number)
    _installed = (handler, limiter)


def set_level(level: str) -> None:
    """Change the root logger's level only (``--log-level`` on a reload)."""
    logging.getLogger().setLevel(_level(level))


def summary() -> int:
    """Report what the installed :class:`RepeatFilter` is holding back (call it before
    the process exits). Returns how many dropped records were reported; 0 before
    :func:`setup`."""
    if _installed is None:
        return 0
    return _installed[1].flush()
