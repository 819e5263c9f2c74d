"""``--history-days``: a line past the age limit is not served, whether the cache or the
disk answers (issue 17): pure, no server.

Retention deletes old lines right after start and then once a minute; in between, the
disk still holds lines that have aged out. The cache in front of SQLite leaves them out,
and so must the reader: a room that had lines when chatd started is read from the disk,
one made since from the cache, and both must give the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.history.model import Kind, Query, Ref, RefKind, StoredLine
from chatd.history.sqlite import SQLiteHistory

HOUR = 3600.0
START = 1_000_000.0


def line(room: str, i: int) -> StoredLine:
    return StoredLine(room, f"{room}-m{i:02d}", START + i * HOUR, "n", "u", "h", "say", str(i))


def msgid(room: str, i: int) -> Ref:
    return Ref(RefKind.MSGID, msgid=f"{room}-m{i:02d}")


#: Every kind of query, each with what it gives once lines 0 to 5 are older than a day.
QUERIES: list[tuple[Query, list[str] | None]] = [
    (Query(Kind.LATEST, None, 100), [str(i) for i in range(6, 30)]),
    (Query(Kind.AFTER, Ref(RefKind.TIMESTAMP, at=0.0, span=0.001), 3), ["6", "7", "8"]),
    (Query(Kind.BEFORE, Ref(RefKind.TIMESTAMP, at=START + 10 * HOUR), 100), ["6", "7", "8", "9"]),
    (Query(Kind.AROUND, Ref(RefKind.TIMESTAMP, at=START + 6 * HOUR), 4), ["6", "7", "8", "9"]),
    (
        Query(Kind.BETWEEN, Ref(RefKind.TIMESTAMP, at=0.0), 3, Ref(RefKind.TIMESTAMP, at=math.inf)),
        ["6", "7", "8"],
    ),
    (
        Query(
            Kind.BETWEEN, Ref(RefKind.TIMESTAMP, at=START + 9 * HOUR), 10, Ref(RefKind.TIMESTAMP)
        ),
        ["6", "7", "8"],
    ),
    # A message id that aged out is unknown, as one that was never there.
    (Query(Kind.BEFORE, msgid("#r", 3), 10), None),
    (Query(Kind.AFTER, msgid("#r", 3), 10), None),
]


@pytest.fixture
def no_retention_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the lines on disk: the reads alone, as between two retention passes."""

    def nothing(self: SQLiteHistory) -> Iterator[None]:
        return iter(())

    monkeypatch.setattr(SQLiteHistory, "_prune_steps", nothing)


def answer(history: SQLiteHistory, query: Query, room: str = "#r") -> list[str] | None:
    # The references of QUERIES name #r's lines; the same ones of #s are #s-m...
    if room != "#r":
        query = Query(
            query.kind,
            _moved(query.first, room),
            query.limit,
            _moved(query.second, room),
        )
    selection = history.query(room, query).result(timeout=10)
    return None if selection.unknown_ref else [x.text for x in selection.lines]


def _moved(ref: Ref | None, room: str) -> Ref | None:
    if ref is None or ref.kind is not RefKind.MSGID:
        return ref
    return Ref(RefKind.MSGID, msgid=ref.msgid.replace("#r-", f"{room}-"))


@pytest.mark.usefixtures("no_retention_pass")
@pytest.mark.parametrize(
    "query,expected",
    QUERIES,
    ids=[
        "latest",
        "after-time",
        "before-time",
        "around-time",
        "between-forward",
        "between-backward",
        "before-aged-msgid",
        "after-aged-msgid",
    ],
)
def test_the_disk_serves_nothing_past_the_age_limit_as_the_cache(
    tmp_path: Path, query: Query, expected: list[str] | None
) -> None:
    clock = [START]
    first = SQLiteHistory(tmp_path, per_room=100, days=1, clock=lambda: clock[0])
    first.add_lines("#r", [line("#r", i) for i in range(30)])
    first.close()
    # #r had lines at start: it is read from the disk; #s, made since, from the cache.
    again = SQLiteHistory(tmp_path, per_room=100, days=1, clock=lambda: clock[0])
    try:
        again.add_lines("#s", [line("#s", i) for i in range(30)])
        clock[0] += 86400 + 5 * HOUR + 1  # lines 0 to 5 are now older than a day
        assert answer(again, query, "#s") == expected  # the cache
        assert answer(again, query) == expected  # the disk
    finally:
        again.close()


@pytest.mark.usefixtures("no_retention_pass")
def test_a_room_whose_lines_all_aged_out_is_no_target(tmp_path: Path) -> None:
    clock = [START]
    first = SQLiteHistory(tmp_path, per_room=100, days=1, clock=lambda: clock[0])
    first.add_lines("#old", [line("#old", i) for i in range(3)])
    first.add_lines("#r", [line("#r", i) for i in range(30)])
    first.close()
    again = SQLiteHistory(tmp_path, per_room=100, days=1, clock=lambda: clock[0])
    try:
        clock[0] += 86400 + 5 * HOUR + 1
        found = again.targets(["#old", "#r"], 0.0, math.inf, 10).result(timeout=10)
        assert [t.room for t in found] == ["#r"]
    finally:
        again.close()


def test_ephemeral_history_keeps_the_age_limit_too() -> None:
    """``--ephemeral --history-days D``: lines past D days are gone from every answer."""
    from chatd.history.memory import MemoryHistory

    now = [1_000_000.0]
    history = MemoryHistory(100, days=1.0, clock=lambda: now[0])
    history.add_lines("#r", [line("#r", 0)._replace(at=now[0] - 2 * 86400)])
    history.add_lines("#r", [line("#r", 1)._replace(at=now[0] - 10)])
    latest = Query(Kind.LATEST, None, 10)
    assert [x.text for x in history.query("#r", latest).result().lines] == [line("#r", 1).text]
    now[0] += 86400  # the second line is past the limit now, too
    assert history.query("#r", latest).result().lines == []
    assert history.targets(["#r"], 0.0, now[0], 10).result() == []


def test_the_default_data_dir_ignores_a_relative_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chatd.cli import default_data_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    assert default_data_dir() == str(tmp_path / ".local" / "state" / "chatd")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "abs"))
    assert default_data_dir() == str(tmp_path / "abs" / "chatd")
