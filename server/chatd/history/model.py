"""What history holds and how a query selects from it: plain data and pure functions.

A stored line is one :class:`~chatd.core.events.ChatLine` of a room with its sender and
kind. Lines are ordered by ``(at, msgid)``: the time the hub accepted them, then their
id, which is time-ordered and unique (:mod:`chatd.core.ids`), so any two lines have a
determinate order even when they share a timestamp (IRCv3 chathistory asks for that).

A :class:`Query` is one of IRCv3 chathistory's selections; :func:`select` answers it
from any ascending list of lines, so the in-memory ring, the cache in front of SQLite
and the tests all share one definition of what LATEST, BEFORE, AFTER, AROUND and
BETWEEN return. Bounds are exclusive; results are ascending.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

#: The largest key any line can have at one timestamp, and the smallest (see _key).
_HIGH = "\U0010ffff"


class StoredLine(NamedTuple):
    """One line of a room's history.

    A named tuple, not a dataclass: one is made per line of chat on the loop, and a tuple
    is cheap to make and is the row the store writes as it is (columns in this order).
    """

    #: The room's folded name.
    room: str
    msgid: str
    at: float
    nick: str
    user: str
    host: str
    #: ``say``, ``action`` or ``notice`` (:class:`~chatd.core.events.ChatKind` values).
    kind: str
    text: str
    #: Continues the line before it (a piece of a long line, see ``ChatLine.concat``).
    concat: bool = False
    bot: bool = False

    @property
    def key(self) -> tuple[float, str]:
        return (self.at, self.msgid)


class RefKind(enum.Enum):
    MSGID = "msgid"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Ref:
    """A point in a room's history: a message id, or a time.

    A time with a ``span`` stands for every line in ``[at, at + span)``: an IRCv3
    ``timestamp=`` has millisecond precision, so it names the lines whose ``time`` tag
    shows that millisecond, and "after" it means after all of them.
    """

    kind: RefKind
    msgid: str = ""
    at: float = 0.0
    span: float = 0.0


class Kind(enum.Enum):
    LATEST = "latest"
    BEFORE = "before"
    AFTER = "after"
    AROUND = "around"
    BETWEEN = "between"


@dataclass(frozen=True, slots=True)
class Query:
    """A selection from one room's history (IRCv3 chathistory's subcommands).

    ``first`` is ``None`` only for ``LATEST *``; ``second`` is used by BETWEEN only.
    """

    kind: Kind
    first: Ref | None
    limit: int
    second: Ref | None = None


def time_key(ref: Ref, side: str) -> tuple[float, str]:
    """The ordering key of a timestamp reference on ``side`` (``"low"`` or ``"high"``)."""
    if side == "low":
        return (ref.at, "")
    if ref.span > 0:
        return (ref.at + ref.span, "")  # before every line at the span's end
    return (ref.at, _HIGH)


def _key(ref: Ref, lines: Sequence[StoredLine], side: str) -> tuple[float, str] | None:
    """The ordering key of a reference, ``None`` for a message id not in ``lines``.

    A timestamp stands between the lines of that time (of its span): ``side="low"`` keys
    sort before every line at that time, ``"high"`` after, so bounds stay exclusive
    either way.
    """
    if ref.kind is RefKind.TIMESTAMP:
        return time_key(ref, side)
    for line in lines:
        if line.msgid == ref.msgid:
            return line.key
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """What :func:`select` found: the lines, and whether it reached the list's oldest line
    (then an older line missing from the list could have belonged to the answer)."""

    lines: list[StoredLine]
    reached_start: bool
    #: A message id reference that the list does not hold.
    unknown_ref: bool = False


def select(lines: Sequence[StoredLine], query: Query) -> Selection:
    """Answer ``query`` from ``lines`` (ascending by key)."""
    keys = [line.key for line in lines]
    limit = max(query.limit, 0)
    first = query.first

    def position(ref: Ref, side: str) -> int | None:
        key = _key(ref, lines, side)
        if key is None:
            return None
        return bisect.bisect_right(keys, key) if side == "high" else bisect.bisect_left(keys, key)

    if query.kind is Kind.LATEST:
        start = 0
        if first is not None:
            found = position(first, "high")
            if found is None:
                return Selection([], True, unknown_ref=True)
            start = found
        lo = max(start, len(lines) - limit)
        return Selection(list(lines[lo:]), lo == 0 and start == 0)
    assert first is not None
    if query.kind is Kind.BEFORE:
        end = position(first, "low")
        if end is None:
            return Selection([], True, unknown_ref=True)
        lo = max(0, end - limit)
        return Selection(list(lines[lo:end]), lo == 0)
    if query.kind is Kind.AFTER:
        after = position(first, "high")
        if after is None:
            return Selection([], True, unknown_ref=True)
        return Selection(list(lines[after : after + limit]), after == 0)
    if query.kind is Kind.AROUND:
        low = position(first, "low")
        high = position(first, "high")
        if low is None or high is None:
            return Selection([], True, unknown_ref=True)
        before = (limit - (high - low)) // 2 if limit > high - low else 0
        # Near the end there are fewer lines after: take more before to fill the limit.
        lo = max(0, min(low - before, len(lines) - limit))
        hi = min(len(lines), lo + limit)
        return Selection(list(lines[lo:hi]), lo == 0)
    second = query.second
    assert second is not None
    a_low, a_high = position(first, "low"), position(first, "high")
    b_low, b_high = position(second, "low"), position(second, "high")
    if a_low is None or a_high is None or b_low is None or b_high is None:
        return Selection([], True, unknown_ref=True)
    if a_high <= b_low:  # first before second: the earliest lines after first
        start, end = a_high, b_low
        chosen = lines[start : min(end, start + limit)]
        return Selection(list(chosen), start == 0)
    start, end = b_high, a_low  # first after second: the latest lines before first
    lo = max(start, end - limit)
    return Selection(list(lines[lo:end]), lo == 0)
