"""History on SQLite: one writer thread, one reader thread, a cache on the loop's side.

Theory of operation
-------------------
* **The loop only appends.** :meth:`SQLiteHistory.add_lines`, ``save_room`` and
  ``drop_room`` put an operation on :attr:`pending` (a deque: appends are atomic) and
  wake the writer. Nothing on the loop touches the database.
* **One writer, batches.** The writer thread waits for work, lets :attr:`window` seconds
  of operations gather, then writes all of them in **one transaction** and commits. So a
  line is on disk at most ``window`` plus one commit after the hub accepted it: that is
  what SIGKILL can lose. At shutdown :meth:`close` has the writer write everything
  queued before it returns: SIGTERM loses nothing.
* **WAL, ``synchronous=NORMAL``.** A commit survives the process (a crash, SIGKILL); it
  may not survive a power cut, which is SQLite's documented trade for this mode.
* **A failing write never stops the chat.** A batch that fails (disk full, I/O error)
  stays queued and is tried again after :data:`RETRY_SECONDS`; the failure is logged
  once per episode and counted (``history_write_errors``); what is queued is bounded
  (:data:`MAX_PENDING`, the oldest lines dropped past it, counted as
  ``history_lines_dropped``) so memory cannot grow without end while the disk is full.
* **Reads.** Each room keeps its most recent :data:`CACHE_LINES` lines in memory (on
  the loop's side). A query that the cache can answer entirely is answered at once; one
  that may need older lines goes to the reader thread, which has its own connection (WAL
  lets it read while the writer writes) and completes a future. A read waits until the
  writer has committed what the loop had queued when the query was made (or
  :data:`READ_WAIT` seconds, or while writes fail), so a reply never misses a line the
  client has already seen relayed (read-your-writes): the batch window delays a disk
  read, it does not make it stale.
* **Retention.** The writer deletes lines older than ``days`` and beyond ``per_room``
  per room, in bounded chunks between batches, never on the loop.
* **One process per data dir.** An exclusive ``flock`` on ``chatd.lock``: a second chatd
  on the same directory is refused at start, with the first one's pid.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TextIO, TypeVar

from chatd.core import events as ev
from chatd.history import ActiveRoom, History, HistoryError, done_future, restored_event
from chatd.history.model import (
    Kind,
    Query,
    Ref,
    RefKind,
    Selection,
    StoredLine,
    select,
    time_key,
)

log = logging.getLogger("chatd.history")

T = TypeVar("T")

#: Lines of each room kept in memory to answer queries without the disk.
CACHE_LINES = 500
#: Seconds between tries while writes fail.
RETRY_SECONDS = 1.0
#: Operations queued at most while writes fail; past it the oldest lines are dropped.
MAX_PENDING = 200_000
#: Lines deleted per retention step (between batches, so a prune never holds the writer).
PRUNE_CHUNK = 5000
#: Seconds between retention passes.
PRUNE_SECONDS = 60.0
#: Seconds a read waits, beyond the batch window, for the writer to commit what was
#: queued before it (then it reads what is there).
READ_WAIT = 2.0
SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines(
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    msgid TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    nick TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    concat INTEGER NOT NULL,
    bot INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_by_room ON lines(room, at, msgid);
CREATE INDEX IF NOT EXISTS lines_by_time ON lines(at);
CREATE TABLE IF NOT EXISTS rooms(key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""
_COLUMNS = "room, msgid, at, nick, user, host, kind, text, concat, bot"

Op = tuple[str, object, object]
#: A query for the reader thread, the future it completes, and how many operations had
#: been queued when it was asked (the reader waits until they are settled).
Read = tuple[Callable[[sqlite3.Connection], object], Future[object], int]


def _line(row: tuple[object, ...]) -> StoredLine:
    room, msgid, at, nick, user, host, kind, text, concat, bot = row
    return StoredLine(
        str(room),
        str(msgid),
        float(at),  # type: ignore[arg-type]
        str(nick),
        str(user),
        str(host),
        str(kind),
        str(text),
        bool(concat),
        bool(bot),
    )


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class SQLiteHistory(History):
    """History in ``DATA_DIR/chatd.sqlite3``."""

    def __init__(
        self,
        directory: Path,
        *,
        per_room: int,
        days: float,
        window: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.per_room = max(per_room, 1)
        self.days = days
        #: Seconds a batch gathers before it is written: what SIGKILL can lose.
        self.window = window
        self.clock = clock
        self._lock_file = self._lock(directory)
        self.path = directory / "chatd.sqlite3"
        try:
            db = _connect(self.path)
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: schema {version}, this chatd reads {SCHEMA_VERSION}"
                )
            counts = dict(db.execute("SELECT room, COUNT(*) FROM lines GROUP BY room").fetchall())
            self._rooms = [str(data) for (data,) in db.execute("SELECT data FROM rooms")]
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise HistoryError(f"{self.path}: {exc}") from None
        self._db = db
        #: Lines per room on disk (kept by the writer, for retention).
        self._counts: dict[str, int] = {str(k): int(v) for k, v in counts.items()}
        #: Rooms with lines on disk when we started: their caches are not complete.
        self._older = frozenset(self._counts)
        self._cache: dict[str, deque[StoredLine]] = {}
        self.pending: deque[Op] = deque()
        #: Operations queued by the loop, ever; and those settled (committed, or dropped
        #: past MAX_PENDING) by the writer, under ``_settle``: a read waits for its mark.
        self._queued = 0
        self._settled = 0
        self._settle = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._flushed = threading.Event()
        self.write_errors = 0
        self.lines_written = 0
        self.lines_dropped = 0
        self._failing = False
        self._writer = threading.Thread(target=self._write_loop, name="chatd-history-writer")
        self._writer.daemon = True
        self._writer.start()
        self._reads: queue.Queue[Read | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, name="chatd-history-reader")
        self._reader.daemon = True
        self._reader.start()

    @staticmethod
    def _lock(directory: Path) -> TextIO:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = open(directory / "chatd.lock", "a+")  # noqa: SIM115 - held for the run
        except OSError as exc:
            raise HistoryError(f"data directory {directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise HistoryError(
                f"data directory {directory} is in use by another chatd (pid {holder})"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        if not os.access(directory, os.W_OK):
            lock.close()
            raise HistoryError(f"data directory {directory} is not writable")
        return lock

    # ----------------------------------------------------------------- the loop's side

    def add_lines(self, room: str, lines: list[StoredLine]) -> None:
        cache = self._cache.get(room)
        if cache is None:
            cache = self._cache[room] = deque(maxlen=min(CACHE_LINES, self.per_room))
        cache.extend(lines)
        self._queued += len(lines)
        pending = self.pending
        for line in lines:
            pending.append(("line", line, None))
        self._wake.set()

    def save_room(self, key: str, record: str) -> None:
        self._queued += 1
        self.pending.append(("room", key, record))
        self._wake.set()

    def drop_room(self, key: str) -> None:
        self._queued += 1
        self.pending.append(("drop", key, None))
        self._wake.set()

    def restore(self) -> list[ev.RoomRestored]:
        events = []
        for data in self._rooms:
            try:
                events.append(restored_event(data))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("a saved room could not be read, skipped: %s", exc)
        return events

    def query(self, room: str, query: Query) -> Future[Selection]:
        cache = self._cache.get(room)
        lines = list(cache) if cache else []
        selection = select(lines, query)
        complete = room not in self._older and (cache is None or len(cache) < (cache.maxlen or 0))
        if complete or (not selection.reached_start and not selection.unknown_ref):
            return done_future(selection)
        return self._read(lambda db: _query(db, room, query))

    def targets(
        self, rooms: list[str], after: float, before: float, limit: int
    ) -> Future[list[ActiveRoom]]:
        def run(db: sqlite3.Connection) -> list[ActiveRoom]:
            if not rooms:
                return []
            marks = ",".join("?" * len(rooms))
            rows = db.execute(
                f"SELECT room, MAX(at) FROM lines WHERE room IN ({marks}) AND at > ? AND at < ?"
                " GROUP BY room ORDER BY MAX(at) DESC LIMIT ?",
                (*rooms, after, before, limit),
            ).fetchall()
            return [ActiveRoom(str(r), float(a)) for r, a in rows]

        return self._read(run)

    def counters(self) -> dict[str, int]:
        return {
            "history_lines_written": self.lines_written,
            "history_write_errors": self.write_errors,
            "history_lines_dropped": self.lines_dropped,
            "history_pending": len(self.pending),
        }

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._writer.join(timeout=30)
        self._reads.put(None)
        self._reader.join(timeout=5)
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._lock_file.close()

    def _read(self, run: Callable[[sqlite3.Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self._reads.put((run, future, self._queued))  # type: ignore[arg-type]
        return future

    # ----------------------------------------------------------------- the threads

    def _read_loop(self) -> None:
        db = _connect(self.path)
        while (item := self._reads.get()) is not None:
            run, future, mark = item
            with self._settle:
                self._settle.wait_for(
                    lambda: self._settled >= mark or self._failing or self._closing,  # noqa: B023
                    timeout=self.window + READ_WAIT,
                )
            try:
                future.set_result(run(db))
            except Exception as exc:  # a failed read costs its query only
                log.warning("history: a read failed (%s)", exc)
                future.set_exception(exc)
        db.close()

    def _write_loop(self) -> None:
        next_prune = time.monotonic()
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(self.window)  # let a batch gather
            self._wake.clear()
            if self.pending:
                self._write_batch()
            if self._closing and (not self.pending or self._failing):
                if self._failing:
                    log.error("history: %d operations not written at shutdown", len(self.pending))
                return
            if self._failing:
                time.sleep(RETRY_SECONDS)
                self._wake.set()
            elif time.monotonic() >= next_prune:
                self._prune()
                next_prune = time.monotonic() + PRUNE_SECONDS

    def _write_batch(self) -> None:
        pending = self.pending
        batch: list[Op] = []
        while pending:
            batch.append(pending.popleft())
        db = self._db
        written = 0
        try:
            db.execute("BEGIN")
            for op, a, b in batch:
                if op == "line":
                    line: StoredLine = a  # type: ignore[assignment]
                    db.execute(
                        f"INSERT OR IGNORE INTO lines({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            line.room,
                            line.msgid,
                            line.at,
                            line.nick,
                            line.user,
                            line.host,
                            line.kind,
                            line.text,
                            int(line.concat),
                            int(line.bot),
                        ),
                    )
                    written += 1
                elif op == "room":
                    db.execute("INSERT OR REPLACE INTO rooms(key, data) VALUES (?, ?)", (a, b))
                else:
                    db.execute("DELETE FROM rooms WHERE key = ?", (a,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.write_errors += 1
            if not self._failing:
                log.warning("history: writing failed, will retry (%s)", exc)
            self._failing = True
            pending.extendleft(reversed(batch))
            excess = len(pending) - MAX_PENDING
            dropped = 0
            while excess > 0:
                pending.popleft()
                self.lines_dropped += 1
                dropped += 1
                excess -= 1
            with self._settle:
                self._settled += dropped
                self._settle.notify_all()
            return
        if self._failing:
            log.warning("history: writing works again")
            self._failing = False
        with self._settle:
            self._settled += len(batch)
            self._settle.notify_all()
        self.lines_written += written
        counts = self._counts
        for op, a, _ in batch:
            if op == "line":
                room = a.room  # type: ignore[attr-defined]
                counts[room] = counts.get(room, 0) + 1

    def _prune(self) -> None:
        """Delete what retention no longer keeps, a chunk at a time."""
        db = self._db
        try:
            if self.days > 0:
                cutoff = self.clock() - self.days * 86400
                while True:
                    gone = db.execute(
                        "DELETE FROM lines WHERE id IN (SELECT id FROM lines WHERE at < ? LIMIT ?)",
                        (cutoff, PRUNE_CHUNK),
                    ).rowcount
                    if gone < PRUNE_CHUNK:
                        break
                self._counts = dict(
                    db.execute("SELECT room, COUNT(*) FROM lines GROUP BY room").fetchall()
                )
            for room, count in list(self._counts.items()):
                excess = count - self.per_room
                if excess > 0:
                    db.execute(
                        "DELETE FROM lines WHERE id IN (SELECT id FROM lines WHERE room = ? "
                        "ORDER BY at, msgid LIMIT ?)",
                        (room, min(excess, PRUNE_CHUNK)),
                    )
                    self._counts[room] = count - min(excess, PRUNE_CHUNK)
        except sqlite3.Error as exc:
            log.warning("history: pruning failed (%s)", exc)


# --------------------------------------------------------------------------- queries


def _bound(db: sqlite3.Connection, room: str, ref: Ref, side: str) -> tuple[float, str] | None:
    if ref.kind is RefKind.TIMESTAMP:
        return time_key(ref, side)
    row = db.execute(
        "SELECT at, msgid FROM lines WHERE room = ? AND msgid = ?", (room, ref.msgid)
    ).fetchone()
    return (float(row[0]), str(row[1])) if row else None


def _rows(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[StoredLine]:
    return [_line(row) for row in db.execute(sql, args).fetchall()]


def _query(db: sqlite3.Connection, room: str, query: Query) -> Selection:
    """``query`` against the database: the same answer :func:`select` gives on a list."""
    base = f"SELECT {_COLUMNS} FROM lines WHERE room = ?"
    limit = max(query.limit, 0)
    first = query.first
    if query.kind is Kind.LATEST and first is None:
        rows = _rows(db, base + " ORDER BY at DESC, msgid DESC LIMIT ?", (room, limit))
        return Selection(rows[::-1], True)
    assert first is not None
    low = _bound(db, room, first, "low")
    high = _bound(db, room, first, "high")
    if low is None or high is None:
        return Selection([], True, unknown_ref=True)
    if query.kind in (Kind.LATEST, Kind.AFTER):
        order = "DESC" if query.kind is Kind.LATEST else "ASC"
        rows = _rows(
            db,
            base + f" AND (at, msgid) > (?, ?) ORDER BY at {order}, msgid {order} LIMIT ?",
            (room, *high, limit),
        )
        return Selection(sorted(rows, key=lambda r: r.key), True)
    if query.kind is Kind.BEFORE:
        rows = _rows(
            db,
            base + " AND (at, msgid) < (?, ?) ORDER BY at DESC, msgid DESC LIMIT ?",
            (room, *low, limit),
        )
        return Selection(rows[::-1], True)
    if query.kind is Kind.AROUND:
        before = _rows(
            db,
            base + " AND (at, msgid) < (?, ?) ORDER BY at DESC, msgid DESC LIMIT ?",
            (room, *low, limit),
        )
        rest = _rows(
            db,
            base + " AND (at, msgid) >= (?, ?) ORDER BY at, msgid LIMIT ?",
            (room, *low, limit + 1),
        )
        return select(before[::-1] + rest, query)
    second = query.second
    assert second is not None
    b_low = _bound(db, room, second, "low")
    b_high = _bound(db, room, second, "high")
    if b_low is None or b_high is None:
        return Selection([], True, unknown_ref=True)
    if high <= b_low:
        rows = _rows(
            db,
            base + " AND (at, msgid) > (?, ?) AND (at, msgid) < (?, ?) ORDER BY at, msgid LIMIT ?",
            (room, *high, *b_low, limit),
        )
        return Selection(rows, True)
    rows = _rows(
        db,
        base
        + " AND (at, msgid) > (?, ?) AND (at, msgid) < (?, ?)"
        + " ORDER BY at DESC, msgid DESC LIMIT ?",
        (room, *b_high, *low, limit),
    )
    return Selection(rows[::-1], True)
