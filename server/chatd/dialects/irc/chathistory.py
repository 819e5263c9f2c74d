"""IRCv3 ``draft/chathistory``: CHATHISTORY over the rooms' history (:mod:`chatd.history`).

::

    CHATHISTORY LATEST  <target> <* | ref> <limit>
    CHATHISTORY BEFORE  <target> <ref> <limit>
    CHATHISTORY AFTER   <target> <ref> <limit>
    CHATHISTORY AROUND  <target> <ref> <limit>
    CHATHISTORY BETWEEN <target> <ref> <ref> <limit>
    CHATHISTORY TARGETS <timestamp=...> <timestamp=...> <limit>

A reference is ``timestamp=YYYY-MM-DDThh:mm:ss.sssZ`` or ``msgid=...`` (005 says
``MSGREFTYPES=timestamp,msgid``). Bounds are exclusive; BETWEEN and TARGETS count their
limit from the first reference, forwards or backwards in time; the lines of a reply are
ascending. A ``timestamp=`` names a millisecond, the precision of the ``time`` tag: it
stands for every line whose ``time`` shows that millisecond, so ``AFTER`` the ``time`` of
a line does not return that line (:func:`timestamp_ref`).

**Who may read what.** Only a member of a room may read its history, whatever the room's
modes: anyone else, and a room that does not exist, get the same ``INVALID_TARGET``, so
the answer does not tell whether a secret room exists. Private messages are not kept
(without accounts a nick's history would go to whoever takes the nick next), so a nick
target, valid and whoever holds it, gets an **empty batch**: the truthful answer "nothing
kept", and what a client opening a query window and asking ``LATEST nick * 50`` can show
quietly (a FAIL there would read as an error on every query window). A target that is
neither a room name nor a valid nick is ``INVALID_TARGET``. ``TARGETS`` lists the rooms
the client is in.

**Nothing is replayed unasked.** chatd never plays history back by itself (not on JOIN,
not on connect); only this command reads it. The command answers whether or not the
client negotiated ``draft/chathistory`` (the cap tells clients history can be asked for;
the spec asks servers not to insist on related caps).

**Replies.** With ``batch``: ``BATCH +id chathistory <room>``, each line tagged
``batch=id``, ``BATCH -id`` (``draft/chathistory-targets`` for TARGETS, with
``CHATHISTORY TARGETS <room> <time>`` lines); an empty result is an empty batch. Without
``batch``, the lines alone. Every line is rendered by the encoder that relays live chat,
with the stored line's own ``msgid`` and ``time`` (per the client's ``message-tags`` and
``server-time``); each stored piece of a long line is its own PRIVMSG, as it was live,
and an action is a CTCP ACTION. A labeled command's response is the batch itself, with
the label on its ``BATCH +`` line (:func:`chatd.dialects.irc.labels.response`).

**Errors** (``FAIL CHATHISTORY <code> <subcommand> ...``, the spec's codes):

* ``INVALID_PARAMS``: an unknown subcommand, too few or too many parameters, a reference
  that cannot be parsed (no ``=``, a bad timestamp, an empty msgid, ``*`` anywhere but
  LATEST's reference), a msgid given to TARGETS, a limit that is not a number;
* ``INVALID_MSGREFTYPE``: a reference of another type (``foo=bar``);
* ``INVALID_TARGET``: not a member, no such room, not a room or nick name;
* ``MESSAGE_ERROR``: a ``msgid=`` that is not in that room's history (aged out, or never
  there: answering with an empty batch would tell a client paging backwards that it has
  reached the start), a failed read, a read not answered within :data:`WAIT_SECONDS`.

The syntax is checked before the target, so a malformed command tells nothing of a room.

**Limits and price.** ``CHATHISTORY=100`` (:data:`MAX_LIMIT`): a larger limit is served as
100 and ``0`` means "the most you give" (both as ergo does); a reply is at most 100 lines.
Like WHO, the command costs its line's flood token, one more per
:data:`LINES_PER_TOKEN` lines it sends, and :data:`DISK_TOKENS` when the cache in front of
the store could not answer and the reader thread went to the disk. The loop never waits:
a query answered from the cache is rendered at once; otherwise the command becomes
:data:`~chatd.dialects.base.Work` that polls the future once per loop turn and renders
the reply on the loop when it is done (the client's later input waits behind it, so
replies stay in order). A disk read waits for the writer to commit what was queued before
it (:mod:`chatd.history.sqlite`), so a reply holds every line the client saw relayed.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from chatd.core import events as ev
from chatd.core.names import valid_nick
from chatd.dialects.base import Work
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.encoder import server_time
from chatd.dialects.irc.labels import add_tag
from chatd.dialects.irc.limits import CHATHISTORY_MAX
from chatd.dialects.irc.wire import Message, encode
from chatd.history import ActiveRoom, Kind, Query, Ref, RefKind, Selection, StoredLine

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession

log = logging.getLogger("chatd.irc")

T = TypeVar("T")

#: Most lines one CHATHISTORY returns (005 ``CHATHISTORY=``), and most TARGETS listed.
MAX_LIMIT = CHATHISTORY_MAX
#: Lines of a reply per extra flood token (as WHO).
LINES_PER_TOKEN = 10
#: Extra flood tokens for a query that the cache could not answer (the disk was read).
DISK_TOKENS = 1
#: Seconds a reply waits for the store before it is given up (``MESSAGE_ERROR``).
WAIT_SECONDS = 10.0
#: What a ``timestamp=`` covers: the ``time`` tag shows milliseconds.
MILLISECOND = 0.001
#: The ``time`` tag rounds a line's time to the microsecond before it cuts to the
#: millisecond: a line shows millisecond T from T - 0.5 µs on.
HALF_MICROSECOND = 5e-7
#: Longest client word (bytes) echoed in a FAIL; longer ones are shown as ``*``. A FAIL
#: echoes one such word, so it always fits 512 bytes.
SHOWN_MAX = 100

_KINDS: dict[str, Kind | None] = {
    "LATEST": Kind.LATEST,
    "BEFORE": Kind.BEFORE,
    "AFTER": Kind.AFTER,
    "AROUND": Kind.AROUND,
    "BETWEEN": Kind.BETWEEN,
    "TARGETS": None,
}
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", re.ASCII)
_NOT_RETRIEVED = "Messages could not be retrieved"


class Refused(Exception):
    """A FAIL to send instead of a reply: ``FAIL CHATHISTORY <code> <context...> :<text>``."""

    def __init__(self, code: str, context: tuple[str, ...], text: str) -> None:
        super().__init__(code)
        self.code = code
        self.context = context
        self.text = text


def shown(word: str) -> str:
    """A client's word as FAIL context (``*`` when too long to echo)."""
    return word if 0 < len(word.encode()) <= SHOWN_MAX else "*"


def parse_timestamp(value: str) -> float | None:
    """``2027-01-15T08:00:00.123Z`` → Unix seconds; ``None`` unless exactly that form of
    a real UTC time (server-time's format: milliseconds, ``Z``)."""
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, ms = map(int, m.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def timestamp_ref(at: float) -> Ref:
    """The reference of a parsed ``timestamp=``: every line that shows that millisecond."""
    return Ref(RefKind.TIMESTAMP, at=at - HALF_MICROSECOND, span=MILLISECOND)


def parse_ref(sub: str, target: str, word: str) -> Ref:
    """A ``timestamp=`` or ``msgid=`` reference; :class:`Refused` for anything else."""
    name, eq, value = word.partition("=")
    if not eq:
        raise Refused("INVALID_PARAMS", (sub, shown(word)), "Invalid message reference")
    name = name.lower()
    if name == "timestamp":
        at = parse_timestamp(value)
        if at is None:
            raise Refused("INVALID_PARAMS", (sub, shown(word)), "Invalid timestamp")
        return timestamp_ref(at)
    if name == "msgid":
        if not value:
            raise Refused("INVALID_PARAMS", (sub, shown(word)), "Invalid message id")
        return Ref(RefKind.MSGID, msgid=value)
    raise Refused(
        "INVALID_MSGREFTYPE",
        (sub, shown(target)),
        "Only timestamp= and msgid= references are supported",
    )


def parse_limit(sub: str, word: str) -> int:
    """The number of lines asked for, within :data:`MAX_LIMIT` (``0``: the maximum)."""
    if not (word.isascii() and word.isdigit()):
        raise Refused("INVALID_PARAMS", (sub, shown(word)), "Invalid limit")
    if len(word) > 9:
        return MAX_LIMIT
    limit = int(word)
    return MAX_LIMIT if limit == 0 or limit > MAX_LIMIT else limit


def chathistory(s: IrcSession, message: Message) -> int:
    """CHATHISTORY; returns the extra flood tokens it costs (see the module's docstring)."""
    try:
        return _chathistory(s, message.params)
    except Refused as refusal:
        s.fail("CHATHISTORY", refusal.code, *refusal.context, text=refusal.text)
        return 0


def _chathistory(s: IrcSession, params: tuple[str, ...]) -> int:
    if not params or not params[0]:
        raise Refused("INVALID_PARAMS", ("*",), "Insufficient parameters")
    sub = params[0].upper()
    if sub not in _KINDS:
        raise Refused("INVALID_PARAMS", (shown(params[0]),), "Unknown command")
    kind = _KINDS[sub]
    args = params[1:]
    wanted = 4 if kind is Kind.BETWEEN else 3
    if len(args) < wanted:
        raise Refused("INVALID_PARAMS", (sub,), "Insufficient parameters")
    if len(args) > wanted:
        raise Refused("INVALID_PARAMS", (sub,), "Too many parameters")
    if kind is None:
        return _targets(s, args)
    target = args[0]
    first: Ref | None = None
    if kind is not Kind.LATEST or args[1] != "*":
        first = parse_ref(sub, target, args[1])
    second = parse_ref(sub, target, args[2]) if kind is Kind.BETWEEN else None
    limit = parse_limit(sub, args[-1])
    hub = s.ctx.hub
    if target.startswith("#"):
        room = hub.find_room(target)
        if room is None or s.uid not in room.members:
            raise Refused("INVALID_TARGET", (sub, shown(target)), _NOT_RETRIEVED)
    elif valid_nick(target):
        # Private messages are not kept: nothing to give, for any nick (see above).
        holder = hub.find(target)
        send_batch(s, ("chathistory", holder.nick if holder else target), [])
        return 0
    else:
        raise Refused("INVALID_TARGET", (sub, shown(target)), _NOT_RETRIEVED)
    name = room.name
    future = s.ctx.history.query(room.key, Query(kind, first, limit, second))
    return _when_done(s, future, lambda: _send_history(s, sub, name, future), (sub, name))


def _when_done(
    s: IrcSession, future: Future[T], finish: Callable[[], int], context: tuple[str, ...]
) -> int:
    """Reply now if ``future`` is done (the cache answered), else as work once it is."""
    if future.done():
        return finish()
    s.work = _awaiting(s, future, finish, context)
    return 0


def _awaiting(
    s: IrcSession, future: Future[T], finish: Callable[[], int], context: tuple[str, ...]
) -> Work:
    """The steps of a reply that went to the disk: poll once per loop turn, then reply."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not future.done():
        if time.monotonic() >= deadline:
            s.fail("CHATHISTORY", "MESSAGE_ERROR", *context, text="History is busy; try again")
            return DISK_TOKENS
        yield 0
    return finish() + DISK_TOKENS


def _result(future: Future[T], context: tuple[str, ...]) -> T:
    try:
        return future.result()
    except Exception as exc:  # the store logged it; this reply fails, nothing else
        log.debug("chathistory: a read failed: %r", exc)
        raise Refused("MESSAGE_ERROR", context, _NOT_RETRIEVED) from None


def _send_history(s: IrcSession, sub: str, name: str, future: Future[Selection]) -> int:
    """The reply to a history query of room ``name``; its extra cost."""
    try:
        selection = _result(future, (sub, name))
        if selection.unknown_ref:
            raise Refused("MESSAGE_ERROR", (sub, name), "Unknown message id")
    except Refused as refusal:
        s.fail("CHATHISTORY", refusal.code, *refusal.context, text=refusal.text)
        return 0
    encoder = enc.encoder_for(s.caps)
    lines = [data for line in selection.lines if (data := render(encoder, name, line))]
    send_batch(s, ("chathistory", name), lines)
    return len(lines) // LINES_PER_TOKEN


def render(encoder: enc.IrcEncoder, target: str, line: StoredLine) -> bytes:
    """A stored line as it was relayed live (``b""`` for one the store garbled)."""
    source = ev.Source(line.nick, line.user, line.host, line.bot)
    chat = ev.ChatLine(line.text, line.msgid, line.at, line.concat)
    try:
        return encoder.chat(source, target, (chat,), ev.ChatKind(line.kind))
    except ValueError:  # not a kind or not a line: nothing the hub accepted
        log.warning("chathistory: stored line %s cannot be rendered, skipped", line.msgid)
        return b""


def send_batch(s: IrcSession, header: tuple[str, ...], lines: list[bytes]) -> None:
    """``lines`` (each one or more encoded lines) in a batch of type ``header[0]`` when
    the client has ``batch``, else alone."""
    if not s.caps & enc.BATCH:
        for data in lines:
            s.write(data)
        return
    s.batches += 1
    ref = f"{s.batches:x}"
    tag = b"batch=" + ref.encode()
    s.send("BATCH", "+" + ref, *header, source=s.server_name, colon=False)
    for data in lines:
        for line in data.split(b"\r\n")[:-1]:
            s.write(add_tag(line + b"\r\n", tag))
    s.send("BATCH", "-" + ref, source=s.server_name, colon=False)


# --------------------------------------------------------------------------- TARGETS


def _targets(s: IrcSession, args: tuple[str, ...]) -> int:
    """TARGETS: the client's rooms whose latest line is between two times (exclusive),
    ascending by that time, the limit counted from the first time given."""
    times = []
    for word in args[:2]:
        name, eq, value = word.partition("=")
        if not eq or name.lower() != "timestamp":
            raise Refused("INVALID_PARAMS", ("TARGETS", shown(word)), "TARGETS takes timestamps")
        at = parse_timestamp(value)
        if at is None:
            raise Refused("INVALID_PARAMS", ("TARGETS", shown(word)), "Invalid timestamp")
        times.append(at)
    limit = parse_limit("TARGETS", args[2])
    member = s.member
    assert member is not None
    forward = times[0] <= times[1]
    low, high = sorted(times)
    after = low + MILLISECOND - HALF_MICROSECOND  # past every line showing ``low``
    before = high - HALF_MICROSECOND
    keys = list(member.rooms)
    if not keys or after >= before:
        send_batch(s, ("draft/chathistory-targets",), [])
        return 0
    # Each room's latest line overall: a room whose latest is past ``before`` is not
    # listed even if it has lines inside the window (the spec's rule).
    future = s.ctx.history.targets(keys, after, math.inf, len(keys))

    def finish() -> int:
        return _send_targets(s, future, before, limit, forward)

    return _when_done(s, future, finish, ("TARGETS",))


def _send_targets(
    s: IrcSession, future: Future[list[ActiveRoom]], before: float, limit: int, forward: bool
) -> int:
    try:
        found = _result(future, ("TARGETS",))
    except Refused as refusal:
        s.fail("CHATHISTORY", refusal.code, *refusal.context, text=refusal.text)
        return 0
    rooms = s.ctx.hub.rooms
    chosen = sorted(
        (active.latest, rooms[active.room].name)
        for active in found
        if active.latest < before and active.room in rooms
    )
    chosen = chosen[:limit] if forward else chosen[-limit:]
    server = s.server_name
    lines = [
        encode("CHATHISTORY", "TARGETS", name, server_time(latest), source=server)
        for latest, name in chosen
    ]
    send_batch(s, ("draft/chathistory-targets",), lines)
    return len(lines) // LINES_PER_TOKEN
