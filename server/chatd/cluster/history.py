"""A cluster's history: each room's stream in Redis, read by whichever node is asked.

On a cluster node (``--redis``) the lines of a room are already in Redis: every chat
event is appended to the room's stream by the publish script
(:data:`~chatd.cluster.scripts.PUBLISH`) before it is sent, trimmed to
``--history-max-per-room`` entries (``MAXLEN ~``) and expiring ``--history-days`` after
the room's last line. So :class:`RedisHistory` stores no line itself: it answers
``CHATHISTORY`` and ``/history`` by reading the stream, and every node answers alike,
whichever node the lines were said on. Each room's state (topic, modes, lists: the
record :func:`chatd.history.room_record` makes) is kept in one Redis hash, written by the
node whose member changed it, so a cluster started again finds its rooms
(:meth:`chatd.cluster.node.ClusterNode.connected` reads them back).

A query reads the stream in pages of :data:`PAGE` entries on the node's command
connection (the loop never waits: the answer is a ``Future`` completed by the reply's
callback, as the SQLite store's are by its reader thread) and asks the one definition of
the selections, :func:`chatd.history.model.select`, whether what it has read settles the
answer:

* most selections read **backwards** from the newest entry (or from a little after the
  reference's time), page after page, until the selection no longer touches the oldest
  line read (then an older line cannot change it), or the stream's start is reached;
* ``AFTER`` reads **forwards** from a little before the reference's time until it has
  the lines it wants.

"A little" is :data:`SKEW`: stream ids carry Redis' clock, lines the accepting node's.
At most :data:`MAX_PAGES` pages are read for one query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from chatd.cluster import codec
from chatd.cluster.resp import Reply
from chatd.core import events as ev
from chatd.core.ids import msgid_time
from chatd.history import ActiveRoom, History, kept_lines
from chatd.history.model import Kind, Query, Ref, RefKind, Selection, StoredLine, select

log = logging.getLogger("chatd.cluster")

#: Stream entries read per command.
PAGE = 200
#: Pages one query reads at most.
MAX_PAGES = 60
#: Seconds between a line's time and its stream id's that a reference allows for.
SKEW = 10.0

Call = Callable[..., None]


def stored_lines(payload: bytes | str) -> list[StoredLine]:
    """The lines history keeps from one stream entry's payload (none for TAGMSG, lines
    to a room's operators, or a payload that is not chat)."""
    try:
        _, event, _ = codec.decode(payload)
    except codec.CodecError:
        return []
    return kept_lines(event) if isinstance(event, ev.Chat) else []


def _payload(entry: object) -> bytes:
    """The payload of one stream entry (``[id, [field, value, ...]]``)."""
    fields = entry[1]  # type: ignore[index]
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"p":
            return bytes(fields[i + 1])
    return b""


def _ref_time(ref: Ref | None) -> float | None:
    if ref is None:
        return None
    if ref.kind is RefKind.TIMESTAMP:
        return ref.at + ref.span
    return msgid_time(ref.msgid)


def _stream_id(at: float) -> str:
    """A stream id bound for the time ``at`` (seconds): ``+``/``-`` past either end."""
    if at != at or at >= 1e15:  # NaN, or past any stream id (a reference of "ever")
        return "+"
    if at <= 0:
        return "-"
    return str(int(at * 1000))


class _Read:
    """One query's pages, until the selection is settled."""

    def __init__(self, history: RedisHistory, stream: str, query: Query) -> None:
        self.history = history
        self.stream = stream
        self.query = query
        self.future: Future[Selection] = Future()
        self.lines: list[StoredLine] = []
        self.pages = 0
        self.forward = query.kind is Kind.AFTER
        first = _ref_time(query.first)
        if self.forward:
            self.cursor = _stream_id(first - SKEW) if first is not None else "-"
        elif query.kind in (Kind.BEFORE,) and first is not None:
            self.cursor = _stream_id(first + SKEW)
        else:  # LATEST, AROUND (lines after the reference too), BETWEEN
            self.cursor = "+"
        self.ref_end = (first + SKEW) if first is not None else None

    def start(self) -> None:
        self._ask(self.cursor, inclusive=True)

    def _ask(self, cursor: str, *, inclusive: bool) -> None:
        bound = cursor if inclusive or cursor in ("+", "-") else "(" + cursor
        if self.forward:
            args = ("XRANGE", self.stream, bound, "+", "COUNT", PAGE)
        else:
            args = ("XREVRANGE", self.stream, bound, "-", "COUNT", PAGE)
        if not self.history.call(self._page, *args):
            self.future.set_exception(ConnectionError("the cluster's Redis is not reachable"))

    def _page(self, reply: Reply) -> None:
        if self.future.done():
            return
        if not isinstance(reply, list):
            self.future.set_exception(ConnectionError(f"history read failed: {reply!r}"))
            return
        self.pages += 1
        cutoff = self.history.cutoff()
        entries = reply if self.forward else reversed(reply)  # a backward page is newest first
        page = [
            line for entry in entries for line in stored_lines(_payload(entry)) if line.at >= cutoff
        ]
        if self.forward:
            self.lines.extend(page)
        else:
            self.lines[:0] = page
        ended = len(reply) < PAGE
        selection = select(self.lines, self.query)
        if ended or self.pages >= MAX_PAGES or self._settled(selection, reply):
            if ended and not self.forward and not selection.unknown_ref:
                selection = Selection(selection.lines, True)
            self.future.set_result(selection)
            return
        last = reply[-1][0]
        self._ask(last.decode() if isinstance(last, bytes) else str(last), inclusive=False)

    def _settled(self, selection: Selection, reply: list[object]) -> bool:
        if self.forward:
            if selection.unknown_ref:
                # Past the reference's time and still not seen: it is not in the stream.
                newest = self.lines[-1].at if self.lines else 0.0
                return self.ref_end is not None and newest > self.ref_end
            return len(selection.lines) >= self.query.limit
        return not selection.unknown_ref and not selection.reached_start


class RedisHistory(History):
    """History on a cluster node: the rooms' streams in Redis (see the module)."""

    def __init__(
        self,
        call: Callable[..., bool],
        stream_of: Callable[[str], str],
        rooms_key: str,
        *,
        days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``call(callback, *command) -> bool``: send a command on the node's command
        connection (False while it is down); ``stream_of(room key)``: the room's stream;
        ``rooms_key``: the hash of the rooms' saved state (room key → record)."""
        super().__init__()
        self.call = call
        self.stream_of = stream_of
        self.rooms_key = rooms_key
        self.days = days
        self.clock = clock
        #: The event being observed came from another node (set by the service).
        self.remote = False

    def cutoff(self) -> float:
        return self.clock() - self.days * 86400 if self.days > 0 else 0.0

    def add_lines(self, room: str, lines: list[StoredLine]) -> None:
        pass  # the publish script appended them to the room's stream already

    def save_room(self, key: str, record: str) -> None:
        # The node whose member changed the room writes its state, once.
        if not self.remote:
            self.call(None, "HSET", self.rooms_key, key, record)

    def drop_room(self, key: str, *, lines: bool) -> None:
        # A room that ended loses its saved state, and a guarded one its lines too (see
        # History.drop_room); the node whose member ended it deletes them, once.
        if self.remote:
            return
        self.call(None, "HDEL", self.rooms_key, key)
        if lines:
            self.call(None, "DEL", self.stream_of(key))

    def query(self, room: str, query: Query) -> Future[Selection]:
        read = _Read(self, self.stream_of(room), query)
        read.start()
        return read.future

    def targets(
        self, rooms: list[str], after: float, before: float, limit: int
    ) -> Future[list[ActiveRoom]]:
        future: Future[list[ActiveRoom]] = Future()
        found: list[ActiveRoom] = []
        waiting = [len(rooms)]
        if not rooms:
            future.set_result([])
            return future

        def answered(room: str, reply: Reply) -> None:
            waiting[0] -= 1
            if isinstance(reply, list):
                times = [
                    line.at
                    for entry in reply
                    for line in stored_lines(_payload(entry))
                    if after < line.at < before
                ]
                if times:
                    found.append(ActiveRoom(room, max(times)))
            if waiting[0] == 0 and not future.done():
                found.sort(key=lambda t: t.latest, reverse=True)
                future.set_result(found[:limit])

        for room in rooms:
            args = (
                "XREVRANGE",
                self.stream_of(room),
                _stream_id(before + SKEW),
                _stream_id(max(after - SKEW, 0)),
                "COUNT",
                PAGE,
            )
            if not self.call(lambda reply, room=room: answered(room, reply), *args):
                future.set_exception(ConnectionError("the cluster's Redis is not reachable"))
                return future
        return future
