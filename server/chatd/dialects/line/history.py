"""``/history [N]``: the current room's last N lines, replayed only when asked for.

A replay is framed so that nothing in it reads as live chat or can be forged::

    * history of #lobby (3 lines, times in UTC):
    * #lobby 2027-01-15 08:00:00 amy: hello
    * #lobby 2027-01-15 08:00:05 * bob waves
    * #lobby 2027-01-15 08:01:10 amy: a long line, whole again
    * end of history of #lobby

Every line of it is a ``* `` notice (PROTOCOL.md's live chat is ``nick: text``, which
never starts with ``* ``); the first and last start with a fixed word (``history``,
``end``) that is therefore a reserved nickname, and each replayed line starts with the
room's name, which no nickname can (nicknames never start with ``#``), so no ``/me``
action renders as one (:mod:`chatd.dialects.line.notices`). IRC NOTICEs to the room read
like chat, as they do live. Times are the hub's, in UTC, to the second.

The store answers a query at once from memory or later from its reader thread
(:mod:`chatd.history`); the replay runs as long work (:data:`chatd.dialects.base.Work`)
that polls the future once per loop turn and never waits on the disk. A line too long
for IRC's frame was stored as pieces (``concat``), which are joined back into one line
here as they are live (:func:`chatd.core.events.joined`); N counts whole lines, so a
replay whose N lines were stored as more pieces asks the store again for older ones (at
most :data:`QUERIES` queries, each for at most :data:`MOST_PIECES` pieces; a line whose
start is still out of reach then is left out rather than shown in part).

Price, in flood tokens, as WHO's: one per :data:`LINES_PER_TOKEN` lines sent (or per
:data:`BYTES_PER_TOKEN` bytes, if that is more), one per query beyond the first, and one
per query the store had to answer from disk.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chatd.core import errors as err
from chatd.core.model import Room
from chatd.dialects.base import Work
from chatd.dialects.line.errors import error_text
from chatd.dialects.line.notices import notice
from chatd.history.model import Kind, Query, Ref, RefKind, StoredLine

if TYPE_CHECKING:
    from chatd.dialects.line.session import LineSession

#: Lines ``/history`` shows without N.
DEFAULT = 20
#: Lines ``/history`` shows at most; a larger N is cut to this.
MAXIMUM = 100
USAGE = f"usage: /history [N] (N lines, 1 to {MAXIMUM}; {DEFAULT} without N)"
#: Lines sent per flood token (WHO's rate), and bytes.
LINES_PER_TOKEN = 10
BYTES_PER_TOKEN = 16384
#: Queries one replay makes at most: more than one only when long lines were cut.
QUERIES = 4
#: Stored lines (pieces) one query asks for at most.
MOST_PIECES = 1000
#: A time the clock could not have given (a corrupt store): shown, never raised.
_NO_TIME = "????-??-?? ??:??:??"

_DIGITS = re.compile(r"[0-9]+")


def count(args: str) -> int | None:
    """N from ``/history``'s arguments: :data:`DEFAULT` for none, at most :data:`MAXIMUM`;
    ``None`` for anything but a positive decimal number."""
    args = args.strip()
    if not args:
        return DEFAULT
    if _DIGITS.fullmatch(args) is None:
        return None
    digits = args.lstrip("0")
    if not digits:
        return None
    if len(digits) > 6:  # never convert a 4,000-digit number
        return MAXIMUM
    return min(int(digits), MAXIMUM)


def utc(at: float) -> str:
    """``2027-01-15 08:00:00``: a stored line's time in UTC, to the second."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
    except (OverflowError, OSError, ValueError):
        return _NO_TIME


def whole_lines(pieces: Iterable[StoredLine]) -> list[tuple[StoredLine, str]]:
    """Stored lines as they were sent: each continuation piece joined to the line it
    continues (``concat``, same sender, kind and time), as :func:`chatd.core.events.joined`
    does live. A piece whose start is not in ``pieces`` stands on its own."""
    out: list[tuple[StoredLine, str]] = []
    for line in pieces:
        if out and line.concat:
            head, text = out[-1]
            if (head.nick, head.kind, head.at) == (line.nick, line.kind, line.at):
                out[-1] = (head, text + line.text)
                continue
        out.append((line, line.text))
    return out


def render(room: str, head: StoredLine, text: str) -> bytes:
    """One replayed line: ``* #room DATE TIME nick: text`` or ``* #room DATE TIME * nick text``."""
    name = "history_action" if head.kind == "action" else "history_say"
    return notice(name, room=room, when=utc(head.at), nick=head.nick, text=text)


def replay(s: LineSession, room: Room, n: int) -> Work:
    """The steps of ``/history N`` in ``room``: query (polling the store's future once per
    loop turn), then send the frame and the lines in one step; the last step's value is
    the whole replay's cost."""
    history = s.ctx.history
    pieces: list[StoredLine] = []
    cost = 0
    exhausted = False  # the store has nothing older than pieces[0]
    for asked in range(QUERIES):
        heads = sum(not line.concat for line in pieces)
        if heads >= n:
            break
        # Twice the lines still wanted (and a few), four times more each further query.
        want = min((2 * (n - heads) + 8) << (2 * asked), MOST_PIECES)
        if pieces:
            cost += 1  # a further query
            query = Query(Kind.BEFORE, Ref(RefKind.MSGID, pieces[0].msgid), want)
        else:
            query = Query(Kind.LATEST, None, want)
        future = history.query(room.key, query)
        if not future.done():
            cost += 1  # the disk answers this one
            while not future.done():
                yield 0
        try:
            selection = future.result()
        except Exception:  # the store failed this read (its reader logged why)
            s.error("history is not available now; try again later")
            return cost
        pieces[:0] = selection.lines
        if selection.unknown_ref or len(selection.lines) < want:
            exhausted = True
            break
    lines = whole_lines(pieces)
    if lines and lines[0][0].concat and not exhausted:
        del lines[0]  # its start is older than what was read: not shown in part
    lines = lines[-n:]
    member = s.member
    if member is None or room.key not in member.rooms or s.current != room.key:
        s.error(error_text(err.NotInRoom(room.name)))  # kicked while the store answered
        return cost
    shown = f"{len(lines)} line{'' if len(lines) == 1 else 's'}" if lines else "no lines"
    data = b"".join(
        [
            notice("history", room=room.name, lines=shown),
            *(render(room.name, head, text) for head, text in lines),
            notice("history_end", room=room.name),
        ]
    )
    s.write(data)
    return cost + max(len(lines) // LINES_PER_TOKEN, len(data) // BYTES_PER_TOKEN)
