"""Rooms given back at start from a damaged file (issue 17): pure, no server.

A saved room that cannot be read is skipped with a warning, never a traceback that stops
chatd at start: JSON that is not a record, and a record whose name the hub would refuse.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from chatd.history.sqlite import SQLiteHistory

GOOD = {"name": "#good", "created": 1.0, "topic": "kept", "modes": "nt"}


@pytest.mark.parametrize(
    "data",
    [
        "[1, 2]",
        '"#room"',
        "null",
        "7",
        json.dumps({"name": "#lists", "created": 1.0, "lists": [1]}),
        json.dumps({"name": "no hash", "created": 1.0}),
        json.dumps({"name": "#two words", "created": 1.0}),
        json.dumps({"name": "#", "created": 1.0}),
    ],
)
def test_a_damaged_room_record_is_skipped_not_raised(
    tmp_path: Path, data: str, caplog: pytest.LogCaptureFixture
) -> None:
    SQLiteHistory(tmp_path, per_room=10, days=0).close()  # the schema
    db = sqlite3.connect(tmp_path / "chatd.sqlite3")
    db.execute("INSERT INTO rooms(key, data) VALUES ('#good', ?)", (json.dumps(GOOD),))
    db.execute("INSERT INTO rooms(key, data) VALUES ('#bad', ?)", (data,))
    db.commit()
    db.close()
    history = SQLiteHistory(tmp_path, per_room=10, days=0)
    try:
        restored = history.restore()
    finally:
        history.close()
    assert [(event.room, event.topic) for event in restored] == [("#good", "kept")]
    assert "a saved room could not be read, skipped" in caplog.text


def test_a_restored_room_obeys_the_text_policy_and_the_lengths() -> None:
    """A file edited by hand cannot put ESC in a topic, nor a key or mask past its length."""
    from chatd.history import restored_event

    record = {
        "name": "#r",
        "created": 1.0,
        "topic": "\x1b]0;pwned\x07" + "t" * 500,
        "topic_by": "ev\x1bil",
        "password": "k\x07" + "k" * 40,
        "lists": {"b": [["m\x9b" + "m" * 200, "op", 2.0]]},
    }
    event = restored_event(json.dumps(record))
    assert event.topic.startswith("\ufffd]0;pwned\ufffd") and len(event.topic) == 390
    assert event.topic_by == "ev\ufffdil"
    assert event.password is not None and len(event.password) == 32
    assert event.password.startswith("k\ufffd")
    ((mask, by, at),) = event.bans
    assert mask.startswith("m\ufffd") and len(mask) == 150 and (by, at) == ("op", 2.0)
