"""The message stamp: what every timed load message carries, in every dialect.

One format for the Locust user and bench's lean driver: a message's text is
``LT <sender> <seq> <time>`` followed, when a size asks for it, by a space and ``.``
padding. Plain ASCII, so it survives any IRC daemon.

* ``sender`` is a token without spaces: the Locust user writes its nick, the driver its
  sender index in decimal.
* ``seq`` is the message's position in its sender's schedule, from 0.
* ``time`` is an integer on the sender's clock: when the message was *meant* to be sent
  (coordinated omission: a stalled server shows up as latency, not as a slower sender).
  Its unit is the user's: the Locust user writes microseconds since the epoch (its senders
  and receivers may be different processes), the driver ``time.perf_counter_ns()`` (one
  process serves both ends).

Two readers: :func:`parse_text` is strict (the Locust dialects' ``classify`` has already
found the text; a mangled one is a :class:`~chatload.framing.ProtocolError`) and
:func:`find_stamp` is the driver's lenient hot path over a whole received line of any
dialect (chat, IRC ``PRIVMSG`` or a Redis payload), None for anything without a stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatload.framing import ProtocolError

#: First token of every stamped message, so receivers can ignore chat from humans.
MAGIC = b"LT"
_MAGIC_SP = MAGIC + b" "
#: Bytes that may precede the stamp in a line: its start, the space after ``nick:`` (line
#: dialect) or the ``:`` of an IRC trailing parameter.
_BEFORE_STAMP = frozenset(b" :")


def encode_stamp(sender: str | bytes, seq: int, time: int, size: int = 0) -> bytes:
    """The text of one stamped message (no terminator), padded to ``size`` bytes.

    The header always fits, so a size smaller than the header yields just the header;
    padding needs a separator and at least one byte, so a size of exactly the header plus
    one byte yields the header alone too. Never longer than asked otherwise.
    """
    token = sender.encode("ascii") if isinstance(sender, str) else sender
    head = b"%s %s %d %d" % (MAGIC, token, seq, time)
    pad = size - len(head) - 1
    if pad > 0:
        return head + b" " + b"." * pad
    return head


def filler(size: int) -> bytes:
    """An unstamped payload of exactly ``size`` bytes (the driver's flood messages)."""
    if size < 1:
        raise ValueError("payload size must be >= 1")
    return b"f" * size


@dataclass(frozen=True, slots=True)
class Message:
    """A stamped chat message as a Locust receiver saw it (see :func:`parse_text`)."""

    #: Nick the server stamped on the line.
    stamped: str
    #: Sender id carried in the text; must equal ``stamped``.
    sender: str
    #: Position in the sender's schedule, from 0.
    seq: int
    #: Reference send time: min(intended, actual write time), microseconds since the epoch.
    intended_us: int


def parse_text(stamped: bytes, text: bytes, line: bytes = b"") -> Message:
    """Parse a stamped message's ``text`` (``LT ...``); ``stamped`` is the server's nick.

    Raises ``ProtocolError`` for a text that looks like ours but is mangled, because that
    means the server corrupted a message in transit. ``line`` is only for the error.
    """
    parts = text.split(b" ", 4)
    if len(parts) < 4:
        raise ProtocolError(f"truncated load-test message: {(line or text)[:120]!r}")
    try:
        return Message(
            stamped.decode("ascii"), parts[1].decode("ascii"), int(parts[2]), int(parts[3])
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"mangled load-test message: {(line or text)[:120]!r}") from exc


#: What :func:`find_stamp` reads: (sender token as sent, seq, time). A plain tuple: one
#: is built per timed line, and a ``NamedTuple``'s constructor costs several times more.
Stamp = tuple[bytes, int, int]


def find_stamp(line: bytes) -> Stamp | None:
    """Find and decode the stamp in one received line of any dialect, else None.

    The stamp is the first ``LT `` at the line's start or after a space or ``:``: a chat
    line is ``nick: LT ...``, an IRC one ``:nick!user@host PRIVMSG #room :LT ...`` (nicks,
    hosts and channels hold no space) and a Redis payload line ``LT ...``. Notices,
    errors, IRC JOINs and RESP framing lines carry none and give None; so does a mangled
    stamp. A trailing ``\\r`` is whitespace to ``int()``.
    """
    at = line.find(_MAGIC_SP)
    if at < 0 or (at and line[at - 1] not in _BEFORE_STAMP):
        return None
    parts = line[at + 3 :].split(b" ", 3)
    if len(parts) < 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None
