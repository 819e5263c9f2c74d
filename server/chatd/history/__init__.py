"""History and persistence: what was said in each room, and each room's state, kept.

The hub publishes events; the service hands each one, after the router, to the
history's :meth:`History.observe`, which keeps

* every line of chat to a whole room (say, action, notice) with its id, time and
  sender: private messages are not kept (without accounts a nick's history would go
  to whoever takes the nick next), nor lines to a room's operators (STATUSMSG);
* each room's state (topic with setter and time, modes, key, limit, lists, creation
  time), so that a restart gives back the rooms that existed when chatd stopped, with
  their state, through :meth:`Hub.receive <chatd.core.hub.Hub.receive>` like any event.

Two kinds, one interface (:class:`History`):

* :class:`~chatd.history.memory.MemoryHistory` (``--ephemeral``): a bounded ring of
  lines per room, nothing on disk;
* :class:`~chatd.history.sqlite.SQLiteHistory` (the default, ``--data-dir``): SQLite in
  WAL mode with one writer thread that commits what the loop queued in one transaction
  per batch window; queries are answered from a cache of each room's recent lines when
  that is enough, otherwise by a reader thread.

**The loop never waits on disk.** :meth:`History.observe` only appends to queues; a
query returns a :class:`concurrent.futures.Future` that is done at once when the cache
answers, or later when the reader thread has; the session that asked polls it between
loop turns (a :data:`~chatd.dialects.base.Work` step), so completion happens on the loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from chatd.core import events as ev
from chatd.core.model import Room
from chatd.core.names import fold, room_problem
from chatd.core.targets import Target, ToRooms
from chatd.core.text import KEYLEN, MASKLEN, TOPICLEN, cleaned
from chatd.history.model import Kind, Query, Ref, RefKind, Selection, StoredLine, select

if TYPE_CHECKING:
    from chatd.core.hub import Hub

__all__ = [
    "ActiveRoom",
    "History",
    "HistoryError",
    "Kind",
    "Query",
    "Ref",
    "RefKind",
    "Selection",
    "StoredLine",
    "select",
]

T = TypeVar("T")

#: Chat kinds that are kept (TAGMSG carries no text), and the name each is kept under.
_KEPT_KINDS = {
    kind: kind.value for kind in (ev.ChatKind.SAY, ev.ChatKind.ACTION, ev.ChatKind.NOTICE)
}
#: Events after which a room's state is saved.
_ROOM_STATE = (ev.TopicChanged, ev.ModeChanged)


class HistoryError(Exception):
    """The history store cannot be used (an unwritable, corrupt or locked data dir)."""


@dataclass(frozen=True, slots=True)
class ActiveRoom:
    """A room with lines between two times (IRCv3 ``CHATHISTORY TARGETS``)."""

    room: str
    latest: float


def kept_lines(event: ev.Chat) -> list[StoredLine]:
    """The lines history keeps of ``event``: chat, actions and notices to a whole room
    (not TAGMSG, not lines to a room's operators), one per piece."""
    value = _KEPT_KINDS.get(event.kind)
    if value is None or event.audience:
        return []
    source = event.source
    room = fold(event.room)
    return [
        StoredLine(
            room,
            line.msgid,
            line.at,
            source.nick,
            source.user,
            source.host,
            value,
            line.text,
            line.concat,
            source.bot,
        )
        for line in event.lines
    ]


def guarded(room: Room) -> bool:
    """Whether ``room`` keeps anyone out who knows its name: invite-only, a key, a ban."""
    return "i" in room.modes or room.password is not None or bool(room.bans)


def room_record(room: Room) -> str:
    """A room's persistent state as JSON (its members are not: they come back by joining)."""
    return json.dumps(
        {
            "name": room.name,
            "created": room.created,
            "topic": room.topic,
            "topic_by": room.topic_by,
            "topic_at": room.topic_at,
            "modes": room.modes,
            "password": room.password,
            "limit": room.limit,
            "lists": {
                char: [[e.mask, e.set_by, e.at] for e in room.mask_list(char)] for char in "beI"
            },
        },
        ensure_ascii=False,
    )


def restored_event(data: str) -> ev.RoomRestored:
    """The event that brings back a room saved by :func:`room_record`; ``ValueError`` (or
    ``KeyError``, ``TypeError``) for a record that is not one (a damaged file)."""
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError(f"not a room record: {data[:50]!r}")
    lists = record.get("lists", {})
    if not isinstance(lists, dict):
        raise ValueError(f"not a room's lists: {str(lists)[:50]!r}")
    name = str(record["name"])
    problem = room_problem(name)
    if problem:
        raise ValueError(f"not a room name: {name[:60]!r} ({problem})")

    # What chatd saved obeys the text policy; a file edited since must too.
    def entries(char: str) -> tuple[tuple[str, str, float], ...]:
        return tuple(
            (cleaned(str(m))[:MASKLEN], cleaned(str(by)), float(at))
            for m, by, at in lists.get(char, ())
        )

    limit = record.get("limit")
    password = record.get("password")
    return ev.RoomRestored(
        name,
        float(record["created"]),
        cleaned(str(record.get("topic", "")))[:TOPICLEN],
        cleaned(str(record.get("topic_by", ""))),
        float(record.get("topic_at", 0.0)),
        str(record.get("modes", "")),
        cleaned(str(password))[:KEYLEN] if password is not None else None,
        int(limit) if limit is not None else None,
        entries("b"),
        entries("e"),
        entries("I"),
    )


class History:
    """What every store does with the hub's events; subclasses keep the data."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        #: Shutting down: rooms that empty now are kept (they come back at the restart).
        self.stopping = False
        #: Rooms closed to some (see :func:`guarded`): when one ends, its lines go too.
        self.guarded: set[str] = set()

    def attach(self, hub: Hub) -> None:
        self.hub = hub

    # ----------------------------------------------------------------- from the hub

    def observe(self, event: ev.Event, target: Target) -> None:
        """Keep what ``event`` says that history keeps (called after every publish)."""
        kind = type(event)
        if kind is ev.Chat:
            assert isinstance(event, ev.Chat)
            if self.stopping:
                return  # (once stopping, nothing is delivered: nobody saw the line)
            lines = kept_lines(event)
            if lines:
                self.add_lines(lines[0].room, lines)
        elif kind in _ROOM_STATE or (kind is ev.Joined and event.created):  # type: ignore[union-attr]
            self._save(fold(event.room))  # type: ignore[union-attr]
        elif kind is ev.RoomRestored:
            self._track(fold(event.room))  # type: ignore[union-attr]
        elif kind is ev.Parted or kind is ev.Kicked:
            self._maybe_gone((fold(event.room),))  # type: ignore[union-attr]
        elif kind is ev.Quit and isinstance(target, ToRooms):
            self._maybe_gone(target.rooms)

    def _track(self, key: str) -> Room | None:
        """Room ``key`` as it is now; whether it is guarded, noted."""
        assert self.hub is not None
        room = self.hub.rooms.get(key)
        if room is not None:
            if guarded(room):
                self.guarded.add(key)
            else:
                self.guarded.discard(key)
        return room

    def _save(self, key: str) -> None:
        room = self._track(key)
        if room is not None:
            self.save_room(key, room_record(room))

    def _maybe_gone(self, keys: Iterable[str]) -> None:
        if self.stopping:
            return
        assert self.hub is not None
        rooms = self.hub.rooms
        for key in keys:
            if key not in rooms:
                self.drop_room(key, lines=key in self.guarded)
                self.guarded.discard(key)

    # ----------------------------------------------------------------- for subclasses

    def add_lines(self, room: str, lines: list[StoredLine]) -> None:
        raise NotImplementedError

    def save_room(self, key: str, record: str) -> None:
        """Keep room ``key``'s state (JSON from :func:`room_record`)."""

    def drop_room(self, key: str, *, lines: bool) -> None:
        """Room ``key`` ended (its last member left while chatd ran): forget its state,
        and with ``lines`` its lines too.

        A room ends with its lines when it was guarded (:func:`guarded`): nobody owns a
        room name yet, and whoever creates the room again (becoming its operator) must
        not read what a key, an invitation or a ban kept from them. An open room's
        lines stay, as anyone could have joined to read them; a room emptied by a
        shutdown does not end at all.
        """

    def restore(self) -> list[ev.RoomRestored]:
        """The rooms saved when chatd last stopped (empty for memory history)."""
        return []

    def query(self, room: str, query: Query) -> Future[Selection]:
        """Lines of room ``room`` (folded) that ``query`` selects."""
        raise NotImplementedError

    def targets(
        self, rooms: list[str], after: float, before: float, limit: int
    ) -> Future[list[ActiveRoom]]:
        """Of ``rooms``, those with lines between the two times, latest activity first."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Counters for ``/stats`` (``history_*``)."""
        return {}

    def close(self) -> None:
        """Write what is queued, then stop (at shutdown: SIGTERM loses nothing)."""


def done_future(value: T) -> Future[T]:
    """A future that is done already (the cache answered)."""
    future: Future[T] = Future()
    future.set_result(value)
    return future
