"""A guarded room that ends takes its lines along, in both stores (issue 17): pure, no
server.

Nobody owns a room name yet, so whoever creates a room again must not read what a key, an
invitation or a ban kept from them in the one that ended; an open room's lines stay. The
SQLite store keeps the order of what the loop queued: a room that ends and is made again
within one batch window keeps the new room's lines only.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chatd.history import History
from chatd.history.memory import MemoryHistory
from chatd.history.model import Kind, Query, StoredLine
from chatd.history.sqlite import SQLiteHistory

LATEST = Query(Kind.LATEST, None, 100)


def lines(room: str, *texts: str, at: float = 0.0) -> list[StoredLine]:
    at = at or time.time()
    return [
        StoredLine(room, f"{room}-{text}", at + i / 1000, "n", "u", "h", "say", text)
        for i, text in enumerate(texts)
    ]


def texts(history: History, room: str) -> list[str]:
    return [line.text for line in history.query(room, LATEST).result(timeout=10).lines]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    if request.param == "memory":
        return MemoryHistory(per_room=100)
    return SQLiteHistory(tmp_path, per_room=100, days=0, window=0.05)


def test_a_guarded_room_that_ended_and_its_lines_are_forgotten(store: History) -> None:
    store.add_lines("#r", lines("#r", "a", "b"))
    store.add_lines("#s", lines("#s", "c"))
    store.add_lines("#open", lines("#open", "d"))
    assert texts(store, "#r") == ["a", "b"]
    store.drop_room("#open", lines=False)
    # Kept on disk (read from there: the cache went); in memory a room's lines end with it.
    assert texts(store, "#open") == (["d"] if isinstance(store, SQLiteHistory) else [])
    if isinstance(store, SQLiteHistory):
        assert "#open" not in store._cache  # memory is bounded by the rooms that exist
    store.drop_room("#r", lines=True)
    assert texts(store, "#r") == []
    store.add_lines("#r", lines("#r", "new"))  # made again within the same window
    assert texts(store, "#r") == ["new"]
    assert texts(store, "#s") == ["c"]
    store.close()
    if isinstance(store, SQLiteHistory):
        again = SQLiteHistory(store.directory, per_room=100, days=0)
        assert (texts(again, "#r"), texts(again, "#open")) == (["new"], ["d"])
        again.close()


def test_the_disk_keeps_the_new_room_only_and_its_count(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path, per_room=3, days=0, window=30.0)
    history.add_lines("#r", lines("#r", "1", "2", "3"))
    history.save_room("#r", '{"name": "#r", "created": 1.0}')
    history.drop_room("#r", lines=True)
    history.add_lines("#r", lines("#r", "4", "5"))
    history.close()  # one batch: lines, drop, lines, in that order
    again = SQLiteHistory(tmp_path, per_room=3, days=0)
    assert again.restore() == []
    assert texts(again, "#r") == ["4", "5"]  # from the disk: #r had lines at start
    again.add_lines("#r", lines("#r", "6", "7", at=time.time() + 1))
    again.close()
    third = SQLiteHistory(tmp_path, per_room=3, days=0)
    assert texts(third, "#r") == ["5", "6", "7"]  # the cap counted 2 lines, not 5
    third.close()
