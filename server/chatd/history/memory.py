"""History in memory only (``--ephemeral``): a bounded ring of lines per room that
exists (a room's lines end with it).

Nothing survives the process; every query is answered at once from the ring, lines
past ``--history-days`` left out as the SQLite store leaves them out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from chatd.history import ActiveRoom, History, done_future
from chatd.history.model import Query, Selection, StoredLine, select


class MemoryHistory(History):
    """The last ``per_room`` lines of each room."""

    def __init__(
        self, per_room: int, *, days: float = 0.0, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.per_room = max(per_room, 1)
        #: Days a line is kept (0: no age limit), as with SQLite.
        self.days = days
        self.clock = clock
        self.rooms: dict[str, deque[StoredLine]] = {}

    def _ring(self, room: str) -> deque[StoredLine]:
        """Room ``room``'s lines, those past the age limit dropped first."""
        ring = self.rooms.get(room)
        if ring is None:
            return deque()
        if self.days > 0:
            cutoff = self.clock() - self.days * 86400
            while ring and ring[0].at < cutoff:
                ring.popleft()
        return ring

    def add_lines(self, room: str, lines: list[StoredLine]) -> None:
        ring = self.rooms.get(room)
        if ring is None:
            ring = self.rooms[room] = deque(maxlen=self.per_room)
        ring.extend(lines)

    def drop_room(self, key: str, *, lines: bool) -> None:
        # Memory only: a room's lines last while the room does, guarded or not, so what
        # is kept is bounded by the rooms that exist (which the hub bounds), not by every
        # room name ever used.
        self.rooms.pop(key, None)

    def query(self, room: str, query: Query) -> Future[Selection]:
        return done_future(select(list(self._ring(room)), query))

    def targets(
        self, rooms: list[str], after: float, before: float, limit: int
    ) -> Future[list[ActiveRoom]]:
        found = []
        for room in rooms:
            ring = self._ring(room)
            if ring:
                times = [line.at for line in ring if after < line.at < before]
                if times:
                    found.append(ActiveRoom(room, max(times)))
        found.sort(key=lambda t: t.latest, reverse=True)
        return done_future(found[:limit])
