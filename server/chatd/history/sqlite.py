"""History on SQLite: one writer thread, one reader thread, a cache on the loop's side.

Theory of operation
-------------------
* **The loop only appends.** :meth:`SQLiteHistory.add_lines`, ``save_room`` and
  ``drop_room`` put lines or an operation on :attr:`pending` (a deque: appends are
  atomic) and wake the writer. Nothing on the loop touches the database.
* **One writer, batches.** The writer thread waits for work, lets :attr:`window` seconds
  of operations gather (counted from the first one's arrival), then writes all of them
  in **one transaction** and commits. So a line is on disk at most ``window`` plus the
  time of a commit after the hub accepted it (two commits when one was running as it
  arrived and took longer than the window): that is what SIGKILL can lose. At shutdown
  :meth:`close` has the writer write everything queued, without waiting for a window,
  before it returns: SIGTERM loses nothing. Should an engine's shutdown never reach
  :meth:`close`, an ``atexit`` hook does the same.
* **WAL, ``synchronous=NORMAL``.** A commit survives the process (a crash, SIGKILL); it
  may not survive a power cut, which is SQLite's documented trade for this mode.
* **A failing write never stops the chat.** A batch that fails (disk full, I/O error)
  stays queued and is tried again after :data:`RETRY_SECONDS`; the failure is logged
  once per episode (a warning when it starts, one when writing works again) and counted
  per failed try (``history_write_errors``); what is queued is bounded
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
* **What a line costs.** The lines table is kept in the order every query reads it,
  ``(room, at, msgid)``, as a ``WITHOUT ROWID`` table: a line is one B-tree insert, with
  no other index to update (a message id is found from the time it encodes, see
  :func:`_bound`), and a :class:`StoredLine` is already the row to bind. On the loop a
  line costs one named tuple and two deque appends.
* **Retention.** A room over ``per_room`` lines loses its oldest in the same transaction
  that added the new ones (a range at the start of the room's own), so no room is ever
  over its cap on disk; each room's count is kept in ``counts``, in the same
  transactions. A retention pass -- right after start, then every :data:`PRUNE_SECONDS`
  -- deletes lines older than ``days`` and trims rooms over the cap (a cap lowered since
  the last run), one chunk of :data:`PRUNE_CHUNK` lines per step, a step only between
  batches: a pass never holds the writer long enough to delay a batch past its bound.
  Counted as ``history_lines_pruned``.
* **A guarded room that ends takes its lines along** (see :meth:`History.drop_room`):
  the loop forgets the room's cache at once, and the writer deletes its state and lines
  in the order the operations were queued, so lines of the room made again after it
  stay.
* **One process per data dir.** An exclusive ``flock`` on ``chatd.lock``: a second chatd
  on the same directory is refused at start, with the first one's pid.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from itertools import chain
from pathlib import Path
from typing import TextIO, TypeVar

from chatd.core import events as ev
from chatd.core.ids import msgid_time
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
PRUNE_CHUNK = 2000
#: Seconds between retention passes (the first runs right after start).
PRUNE_SECONDS = 60.0
#: Seconds a read waits, beyond the batch window, for the writer to commit what was
#: queued before it (then it reads what is there).
READ_WAIT = 2.0
SCHEMA_VERSION = "2"
#: Lines are kept in the order every query reads them, (room, at, msgid): the table is
#: that index (WITHOUT ROWID), so a line costs one B-tree insert and nothing else; a
#: room's oldest lines (retention) are a range at the start of its own. Each room's line
#: count is kept beside them, in the same transactions, for the cap.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines(
    room TEXT NOT NULL,
    msgid TEXT NOT NULL,
    at REAL NOT NULL,
    nick TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    concat INTEGER NOT NULL,
    bot INTEGER NOT NULL,
    PRIMARY KEY (room, at, msgid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts(room TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms(key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""
_COLUMNS = "room, msgid, at, nick, user, host, kind, text, concat, bot"
_INSERT = f"INSERT OR IGNORE INTO lines({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
#: Lines per INSERT statement: one statement of many rows costs less per line than
#: executemany's one per row (binding a named tuple costs more than a plain one, too).
INSERT_ROWS = 64
_INSERT_MANY = f"INSERT OR IGNORE INTO lines({_COLUMNS}) VALUES " + ",".join(
    ["(?,?,?,?,?,?,?,?,?,?)"] * INSERT_ROWS
)
_COUNT = (
    "INSERT INTO counts(room, n) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET n = n + excluded.n"
)
_SET_COUNT = (
    "INSERT INTO counts(room, n) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET n = excluded.n"
)
#: The key of a room's ``OFFSET + 1``-th oldest line (the last of a chunk to delete).
_NTH_OLDEST = "SELECT at, msgid FROM lines WHERE room = ? ORDER BY at, msgid LIMIT 1 OFFSET ?"
#: The same among the lines older than a time.
_NTH_EXPIRED = (
    "SELECT at, msgid FROM lines WHERE room = ? AND at < ? ORDER BY at, msgid LIMIT 1 OFFSET ?"
)
#: A room's lines up to a key, and those older than a time.
_DELETE_TO = "DELETE FROM lines WHERE room = ? AND (at, msgid) <= (?, ?)"
_DELETE_BEFORE = "DELETE FROM lines WHERE room = ? AND at < ?"
#: Version 1 (a rowid table with three indexes) to 2, in one transaction.
_MIGRATE_1 = f"""
BEGIN;
CREATE TABLE lines_v2(
    room TEXT NOT NULL, msgid TEXT NOT NULL, at REAL NOT NULL, nick TEXT NOT NULL,
    user TEXT NOT NULL, host TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,
    concat INTEGER NOT NULL, bot INTEGER NOT NULL, PRIMARY KEY (room, at, msgid)
) WITHOUT ROWID;
INSERT OR IGNORE INTO lines_v2({_COLUMNS}) SELECT {_COLUMNS} FROM lines;
DROP TABLE lines;
ALTER TABLE lines_v2 RENAME TO lines;
CREATE TABLE counts(room TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counts(room, n) SELECT room, COUNT(*) FROM lines GROUP BY room;
UPDATE meta SET value = '2' WHERE key = 'schema';
COMMIT;
"""
#: Rooms checked for expired lines per retention step.
EXPIRY_ROOMS_PER_STEP = 200

#: A room operation: ("room", key, record) saves a room's state, ("drop", key, "")
#: forgets it, ("drop", key, "lines") its lines too. Lines are queued as they are
#: (:class:`StoredLine`).
RoomOp = tuple[str, str, str]
Op = StoredLine | RoomOp
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


def _problem(path: Path, exc: sqlite3.Error) -> str:
    """What a failed open says: a damaged file gets a hint of what to do about it."""
    if type(exc) is sqlite3.DatabaseError:  # not a database, or malformed
        return f"{path}: {exc} (damaged? move it aside to start with an empty history)"
    return f"{path}: {exc}"


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
        db: sqlite3.Connection | None = None
        try:
            db = _connect(self.path)
            db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
            if version == "1":
                db.executescript(_MIGRATE_1)
            elif version != SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: schema {version}, this chatd reads {SCHEMA_VERSION}"
                )
            db.executescript(_SCHEMA)
            counts = dict(db.execute("SELECT room, n FROM counts WHERE n > 0").fetchall())
            self._rooms = [str(data) for (data,) in db.execute("SELECT data FROM rooms")]
        except (sqlite3.Error, HistoryError) as exc:
            if db is not None:
                db.close()
            self._lock_file.close()
            if isinstance(exc, HistoryError):
                raise
            raise HistoryError(_problem(self.path, exc)) from None
        self._db = db
        #: Lines per room on disk (kept by the writer, for retention).
        self._counts: dict[str, int] = {str(k): int(v) for k, v in counts.items()}
        #: Rooms whose cache is not complete: lines on disk when we started, or an open
        #: room that ended (its cache dropped, its lines kept).
        self._older = set(self._counts)
        self._cache: dict[str, deque[StoredLine]] = {}
        self.pending: deque[Op] = deque()
        #: Operations queued by the loop, ever; and those settled (committed, or dropped
        #: past MAX_PENDING) by the writer, under ``_settle``: a read waits for its mark.
        self._queued = 0
        self._settled = 0
        self._settle = threading.Condition()
        self._wake = threading.Event()
        #: Set by close: the writer stops waiting (windows, retries) and writes the rest.
        self._stop = threading.Event()
        self._closing = False
        self._closed = False
        self.write_errors = 0
        self.lines_written = 0
        self.lines_dropped = 0
        self.lines_pruned = 0
        self._failing = False
        self._prune_failing = False
        #: The retention pass in progress (a step per call), or None.
        self._pruner: Iterator[None] | None = None
        #: Seconds between retention passes (tests may shorten it).
        self.prune_every = PRUNE_SECONDS
        self._writer = threading.Thread(target=self._write_loop, name="chatd-history-writer")
        self._writer.daemon = True
        self._writer.start()
        self._reads: queue.Queue[Read | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, name="chatd-history-reader")
        self._reader.daemon = True
        self._reader.start()
        # The engines close history at the end of their shutdown; should one not get
        # there (an exception on the way), what is queued is still written at exit.
        atexit.register(self.close)

    @staticmethod
    def _lock(directory: Path) -> TextIO:
        if directory.exists() and not directory.is_dir():
            raise HistoryError(f"data directory {directory} is not a directory")
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
        self.pending.extend(lines)
        # The writer clears the flag before it takes the queue, so a set flag seen
        # after the append means the writer will take these lines too.
        if not self._wake.is_set():
            self._wake.set()

    def save_room(self, key: str, record: str) -> None:
        self._queued += 1
        self.pending.append(("room", key, record))
        self._wake.set()

    def drop_room(self, key: str, *, lines: bool) -> None:
        # The cache of a room that ended goes either way: memory stays bounded by the
        # rooms that exist. An open room's lines stay on disk, where queries find them.
        self._cache.pop(key, None)
        if lines:
            self._older.discard(key)  # its lines on disk go with this operation
        else:
            self._older.add(key)
        self._queued += 1
        self.pending.append(("drop", key, "lines" if lines else ""))
        self._wake.set()

    def restore(self) -> list[ev.RoomRestored]:
        events = []
        for data in self._rooms:
            try:
                events.append(restored_event(data))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("a saved room could not be read, skipped: %s", exc)
        return events

    def _cutoff(self) -> float:
        """The time before which lines are past the age limit (``-inf``: no limit)."""
        return self.clock() - self.days * 86400 if self.days > 0 else -math.inf

    def query(self, room: str, query: Query) -> Future[Selection]:
        cache = self._cache.get(room)
        cutoff = self._cutoff()
        if cache:
            # Lines past the age limit are gone from disk (or soon will be); anything the
            # cache lost before them was older still.
            while cache and cache[0].at < cutoff:
                cache.popleft()
        lines = list(cache) if cache else []
        selection = select(lines, query)
        complete = room not in self._older and (cache is None or len(cache) < (cache.maxlen or 0))
        if complete or (not selection.reached_start and not selection.unknown_ref):
            return done_future(selection)
        # The disk may still hold lines past the age limit until the next retention pass:
        # the reader leaves them out, as the cache does.
        return self._read(lambda db: _query(db, room, query, cutoff))

    def targets(
        self, rooms: list[str], after: float, before: float, limit: int
    ) -> Future[list[ActiveRoom]]:
        cutoff = self._cutoff()

        def run(db: sqlite3.Connection) -> list[ActiveRoom]:
            if not rooms:
                return []
            marks = ",".join("?" * len(rooms))
            rows = db.execute(
                f"SELECT room, MAX(at) FROM lines WHERE room IN ({marks}) AND at > ? AND at < ?"
                " AND at >= ? GROUP BY room ORDER BY MAX(at) DESC LIMIT ?",
                (*rooms, after, before, cutoff, limit),
            ).fetchall()
            return [ActiveRoom(str(r), float(a)) for r, a in rows]

        return self._read(run)

    def counters(self) -> dict[str, int]:
        return {
            "history_lines_written": self.lines_written,
            "history_write_errors": self.write_errors,
            "history_lines_dropped": self.lines_dropped,
            "history_lines_pruned": self.lines_pruned,
            "history_pending": len(self.pending),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._closing = True
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout=30)
        if self._writer.is_alive():
            log.error(
                "history: the writer did not finish in 30 s; %d not written", len(self.pending)
            )
        self._reads.put(None)
        self._reader.join(timeout=5)
        if not self._writer.is_alive():
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
        try:
            db: sqlite3.Connection | None = _connect(self.path)
        except sqlite3.Error as exc:
            log.warning("history: the reader cannot open %s (%s); queries fail", self.path, exc)
            db = None
        while (item := self._reads.get()) is not None:
            run, future, mark = item
            with self._settle:
                self._settle.wait_for(
                    lambda: self._settled >= mark or self._failing or self._closing,  # noqa: B023
                    timeout=self.window + READ_WAIT,
                )
            try:
                if db is None:
                    raise sqlite3.OperationalError(f"cannot open {self.path}")
                future.set_result(run(db))
            except Exception as exc:  # a failed read costs its query only
                log.warning("history: a read failed (%s)", exc)
                future.set_exception(exc)
        if db is not None:
            db.close()

    def _write_loop(self) -> None:
        wake, stop = self._wake, self._stop
        #: Every operation queued now arrived after this time: a window counts from it.
        since = time.monotonic()
        next_prune = since  # a retention pass right after start
        while True:
            if wake.is_set():
                begin = since  # queued while the writer was busy: the window has begun
            else:
                idle = 0.0 if self._pruner is not None else next_prune - time.monotonic()
                if not wake.wait(max(idle, 0.0)):
                    since = time.monotonic()  # nothing queued yet
                    if self._pruner is None:
                        self._pruner = self._prune_steps()
                    self._prune_step()
                    if self._pruner is None:
                        next_prune = time.monotonic() + self.prune_every
                    continue
                begin = time.monotonic()  # the first operation arrived just now
            delay = begin + self.window - time.monotonic()
            if delay > 0 and not self._closing:
                stop.wait(delay)  # let a batch gather (close cuts it short)
            wake.clear()
            since = time.monotonic()
            if self.pending:
                self._write_batch()
            if self._closing and (not self.pending or self._failing):
                if self.pending:
                    log.error("history: %d operations not written at shutdown", len(self.pending))
                return
            if self._failing:
                stop.wait(RETRY_SECONDS)
                wake.set()
            elif not self._closing and (self._pruner is not None or time.monotonic() >= next_prune):
                # One chunk between batches. A pass that is due starts here too: under a
                # steady flow (a line arriving during every commit) the writer is never
                # idle above, and a pass started only there would never start.
                if self._pruner is None:
                    self._pruner = self._prune_steps()
                self._prune_step()
                if self._pruner is None:
                    next_prune = time.monotonic() + self.prune_every

    def _write_batch(self) -> None:
        """Write everything queued in one transaction, in the order it was queued (a
        room that ends and is made again within a window keeps the new room's lines)."""
        pending = self.pending
        batch: list[Op] = []
        while pending:
            batch.append(pending.popleft())
        counts = self._counts
        db = self._db
        #: Each touched room's line count on disk as the transaction goes.
        now: dict[str, int] = {}
        added: Counter[str] = Counter()
        run: list[StoredLine] = []
        written = 0
        trimmed = 0

        def insert_run() -> None:
            nonlocal written
            if not run:
                return
            before = db.total_changes
            _insert(db, run)
            inserted = db.total_changes - before
            rooms = Counter(line.room for line in run)
            for room, n in rooms.items():
                if inserted != len(run):  # some were there already: count them
                    (n,) = db.execute(
                        "SELECT COUNT(*) FROM lines WHERE room = ?", (room,)
                    ).fetchone()
                    now[room] = int(n)
                else:
                    now[room] = now.get(room, counts.get(room, 0)) + n
            added.update(rooms)
            written += inserted
            run.clear()

        try:
            db.execute("BEGIN")
            for op in batch:
                if isinstance(op, StoredLine):
                    run.append(op)
                    continue
                insert_run()
                kind, key, record = op
                if kind == "room":
                    db.execute(
                        "INSERT OR REPLACE INTO rooms(key, data) VALUES (?, ?)", (key, record)
                    )
                else:  # the room ended: its state goes, and its lines if it was guarded
                    db.execute("DELETE FROM rooms WHERE key = ?", (key,))
                    if record:
                        db.execute("DELETE FROM lines WHERE room = ?", (key,))
                        now[key] = 0
            insert_run()
            for room, n in now.items():
                excess = n - self.per_room
                if excess > 0:
                    # This batch's share at once; an older excess (a cap lowered since the
                    # last run) is the retention pass's, a chunk at a time.
                    gone = _delete_oldest(db, room, min(excess, max(added[room], PRUNE_CHUNK)))
                    now[room] = n - gone
                    trimmed += gone
                if now[room] > 0:
                    db.execute(_SET_COUNT, (room, now[room]))
                else:
                    db.execute("DELETE FROM counts WHERE room = ?", (room,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(db)
            self.write_errors += 1
            if not self._failing:
                log.warning("history: writing failed, will retry (%s)", exc)
            self._failing = True
            pending.extendleft(reversed(batch))
            self._settled_by(self._bound_pending())
            return
        if self._failing:
            log.warning("history: writing works again")
            self._failing = False
        self._settled_by(len(batch))
        self.lines_written += written
        for room, n in now.items():
            if n > 0:
                counts[room] = n
            else:
                counts.pop(room, None)
        self.lines_pruned += trimmed

    def _settled_by(self, n: int) -> None:
        """``n`` more operations are settled (committed or dropped): wake waiting reads."""
        with self._settle:
            self._settled += n
            self._settle.notify_all()

    def _bound_pending(self) -> int:
        """Drop the oldest queued lines past :data:`MAX_PENDING` (room operations stay);
        how many were dropped."""
        pending = self.pending
        excess = len(pending) - MAX_PENDING
        kept: list[Op] = []
        dropped = 0
        while excess > 0 and pending:
            op = pending.popleft()
            if isinstance(op, StoredLine):
                dropped += 1
                excess -= 1
            else:
                kept.append(op)
        pending.extendleft(reversed(kept))
        self.lines_dropped += dropped
        return dropped

    def _prune_step(self) -> None:
        """One chunk of the retention pass in progress; a failure ends the pass."""
        assert self._pruner is not None
        try:
            next(self._pruner)
        except StopIteration:
            self._pruner = None
            self._prune_failing = False
        except sqlite3.Error as exc:
            _rollback(self._db)
            self._pruner = None
            if not self._prune_failing:
                log.warning("history: pruning failed, will try at the next pass (%s)", exc)
            self._prune_failing = True

    def _prune_steps(self) -> Iterator[None]:
        """A retention pass: lines past the age limit, then rooms over the cap (a cap
        lowered since the last run); a chunk of at most :data:`PRUNE_CHUNK` lines per step,
        each in a transaction of its own with its room's count."""
        db = self._db
        if self.days > 0:
            cutoff = self.clock() - self.days * 86400
            for checked, room in enumerate(list(self._counts), 1):
                while True:
                    row = db.execute(_NTH_EXPIRED, (room, cutoff, PRUNE_CHUNK - 1)).fetchone()
                    if (
                        row is None
                        and not db.execute(
                            "SELECT 1 FROM lines WHERE room = ? AND at < ? LIMIT 1", (room, cutoff)
                        ).fetchone()
                    ):
                        break  # nothing (more) past the limit
                    db.execute("BEGIN")
                    if row is None:  # less than a chunk: all of them
                        gone = db.execute(_DELETE_BEFORE, (room, cutoff)).rowcount
                    else:
                        gone = db.execute(_DELETE_TO, (room, *row)).rowcount
                    self._pruned(room, gone)
                    yield
                    if row is None:
                        break
                if checked % EXPIRY_ROOMS_PER_STEP == 0:
                    yield
        for room in [room for room, count in self._counts.items() if count > self.per_room]:
            while (excess := self._counts.get(room, 0) - self.per_room) > 0:
                db.execute("BEGIN")
                gone = _delete_oldest(db, room, min(excess, PRUNE_CHUNK))
                if gone:
                    self._pruned(room, gone)
                else:  # fewer lines than counted (some deleted by hand): count them again,
                    self._recount(room)  # or this step would be tried for ever
                yield

    def _pruned(self, room: str, gone: int) -> None:
        """Commit the deletion of ``gone`` lines of ``room`` (a transaction is open)."""
        db = self._db
        if gone:
            db.execute(_COUNT, (room, -gone))
        db.execute("COMMIT")
        count = self._counts.get(room, 0) - gone
        if count > 0:
            self._counts[room] = count
        else:
            self._counts.pop(room, None)
            db.execute("DELETE FROM counts WHERE room = ? AND n <= 0", (room,))
        self.lines_pruned += gone

    def _recount(self, room: str) -> None:
        """Count ``room``'s lines again and commit that count (a transaction is open)."""
        db = self._db
        (n,) = db.execute("SELECT COUNT(*) FROM lines WHERE room = ?", (room,)).fetchone()
        db.execute(_SET_COUNT, (room, n))
        db.execute("COMMIT")
        if n > 0:
            self._counts[room] = int(n)
        else:
            self._counts.pop(room, None)


def _insert(db: sqlite3.Connection, lines: list[StoredLine]) -> None:
    """Insert ``lines``, :data:`INSERT_ROWS` to a statement."""
    full = len(lines) - len(lines) % INSERT_ROWS
    for start in range(0, full, INSERT_ROWS):
        db.execute(_INSERT_MANY, list(chain.from_iterable(lines[start : start + INSERT_ROWS])))
    db.executemany(_INSERT, map(tuple, lines[full:]))


def _delete_oldest(db: sqlite3.Connection, room: str, n: int) -> int:
    """Delete the ``n`` oldest lines of ``room`` (a range at the start of its own); how many
    went."""
    row = db.execute(_NTH_OLDEST, (room, n - 1)).fetchone()
    if row is None:  # fewer than the count says (a file edited by hand): keep them
        return 0
    return int(db.execute(_DELETE_TO, (room, *row)).rowcount)


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# --------------------------------------------------------------------------- queries


def _bound(
    db: sqlite3.Connection, room: str, ref: Ref, side: str, since: float = -math.inf
) -> tuple[float, str] | None:
    if ref.kind is RefKind.TIMESTAMP:
        return time_key(ref, side)
    # No index on msgid (a line costs one B-tree insert): a message id holds the
    # millisecond it was minted in, and a line's time is never later than the end of
    # that millisecond (the mint floors the time; a clock stepped back, or 4,096 ids in
    # one millisecond, only make the id's time later), so the search walks the room's
    # lines back from just after it (a second of slack, for the floor and float
    # rounding) and meets it; an id's time far after its line's makes the walk longer,
    # never wrong.
    minted = msgid_time(ref.msgid)
    ceiling = minted + 1.0 if minted is not None else math.inf
    row = db.execute(
        "SELECT at, msgid FROM lines WHERE room = ? AND at < ? AND at >= ? AND msgid = ? "
        "ORDER BY at DESC, msgid DESC LIMIT 1",
        (room, ceiling, since, ref.msgid),
    ).fetchone()
    return (float(row[0]), str(row[1])) if row else None


def _rows(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[StoredLine]:
    return [_line(row) for row in db.execute(sql, args).fetchall()]


def _query(db: sqlite3.Connection, room: str, query: Query, since: float = -math.inf) -> Selection:
    """``query`` against the database: the same answer :func:`select` gives on a list.

    Lines older than ``since`` (past the age limit, not yet pruned) are left out: every
    statement has one lower bound, the later of its own and ``(since, "")`` (a message id
    is never empty), so that it stays one range of the primary key."""
    base = f"SELECT {_COLUMNS} FROM lines WHERE room = ?"
    limit = max(query.limit, 0)
    first = query.first
    floor = (since, "")
    if query.kind is Kind.LATEST and first is None:
        rows = _rows(
            db,
            base + " AND (at, msgid) > (?, ?) ORDER BY at DESC, msgid DESC LIMIT ?",
            (room, *floor, limit),
        )
        return Selection(rows[::-1], True)
    assert first is not None
    low = _bound(db, room, first, "low", since)
    high = _bound(db, room, first, "high", since)
    if low is None or high is None:
        return Selection([], True, unknown_ref=True)
    if query.kind in (Kind.LATEST, Kind.AFTER):
        order = "DESC" if query.kind is Kind.LATEST else "ASC"
        rows = _rows(
            db,
            base + f" AND (at, msgid) > (?, ?) ORDER BY at {order}, msgid {order} LIMIT ?",
            (room, *max(high, floor), limit),
        )
        return Selection(sorted(rows, key=lambda r: r.key), True)
    if query.kind in (Kind.BEFORE, Kind.AROUND):
        # The latest ``limit`` lines before the reference: all BEFORE wants, AROUND's
        # older side.
        before = _rows(
            db,
            base
            + " AND (at, msgid) > (?, ?) AND (at, msgid) < (?, ?)"
            + " ORDER BY at DESC, msgid DESC LIMIT ?",
            (room, *floor, *low, limit),
        )
        if query.kind is Kind.BEFORE:
            return Selection(before[::-1], True)
        rest = _rows(
            db,
            base + " AND (at, msgid) >= (?, ?) ORDER BY at, msgid LIMIT ?",
            (room, *max(low, floor), limit + 1),
        )
        return select(before[::-1] + rest, query)
    second = query.second
    assert second is not None
    b_low = _bound(db, room, second, "low", since)
    b_high = _bound(db, room, second, "high", since)
    if b_low is None or b_high is None:
        return Selection([], True, unknown_ref=True)
    if high <= b_low:
        rows = _rows(
            db,
            base + " AND (at, msgid) > (?, ?) AND (at, msgid) < (?, ?) ORDER BY at, msgid LIMIT ?",
            (room, *max(high, floor), *b_low, limit),
        )
        return Selection(rows, True)
    rows = _rows(
        db,
        base
        + " AND (at, msgid) > (?, ?) AND (at, msgid) < (?, ?)"
        + " ORDER BY at DESC, msgid DESC LIMIT ?",
        (room, *max(b_high, floor), *low, limit),
    )
    return Selection(rows[::-1], True)
