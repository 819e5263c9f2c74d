"""Bytes the lean driver sends and the stamps it reads back: chatd's line protocol, IRC
(chatd's IRC listener and the C IRC daemons) and Redis pub/sub.

Sans-IO on purpose: the driver's loop only moves bytes; everything that decides what
the bytes mean lives here and is unit-tested.

A timed message carries a stamp ``@<sender> <seq> <intended_ns>`` followed by padding.
``intended_ns`` is when the message *should* have been sent (t0 + k / rate), not when
it was, so a stalled server shows up as latency instead of as a slower sender
(coordinated omission).
"""

from __future__ import annotations

from dataclasses import dataclass

#: First byte of a stamp; chat lines are ``nick: @...``, IRC lines
#: ``:nick!user@host PRIVMSG #room :@...`` and Redis payloads ``@...``. An IRC prefix holds
#: an ``@`` of its own, so the stamp is the *last* one in the line (padding has none).
STAMP_MARK = b"@"

#: The IRC channel the driver's clients join (one "room").
IRC_CHANNEL = b"#bench"

#: The Redis channel every subscriber listens on (one "room").
REDIS_CHANNEL = b"room"


def chat_register(nick: str, room: str | None = None) -> bytes:
    """Lines that register ``nick`` and, if given, move it to ``room``.

    Sent in one write right after connect: framing is independent of segmentation
    (PROTOCOL.md), so the server handles both lines in order.
    """
    out = nick.encode() + b"\n"
    if room:
        out += b"/join " + room.encode() + b"\n"
    return out


def chat_line(payload: bytes) -> bytes:
    """One chat message (a line that does not start with '/')."""
    if b"\n" in payload or payload.startswith(b"/"):
        raise ValueError("payload must be one line and not a command")
    return payload + b"\n"


def irc_register(nick: str) -> bytes:
    """NICK and USER in one write: the server answers 001 once both are in."""
    n = nick.encode()
    return b"NICK %s\r\nUSER %s 0 * :chatd bench\r\n" % (n, n)


def irc_join(channel: bytes = IRC_CHANNEL) -> bytes:
    """JOIN, sent after 001 (servers refuse it before registration completes)."""
    return b"JOIN %s\r\n" % channel


def irc_privmsg(payload: bytes, channel: bytes = IRC_CHANNEL) -> bytes:
    """One channel message; the payload is the trailing parameter."""
    if b"\n" in payload or b"\r" in payload:
        raise ValueError("payload must be one line")
    return b"PRIVMSG %s :%s\r\n" % (channel, payload)


def irc_command(line: bytes) -> tuple[bytes, list[bytes]]:
    """(command, params) of one received IRC line, prefix dropped, trailing param last.

    ``:srv 001 nick :Welcome`` gives ``(b"001", [b"nick", b"Welcome"])``; the driver
    only needs 001, 366, PING and errors, so tags (``@a=b ...``) are skipped too.
    """
    line = line.rstrip(b"\r")
    if line.startswith(b"@"):
        line = line.partition(b" ")[2]
    if line.startswith(b":"):
        line = line.partition(b" ")[2]
    head, sep, trailing = line.partition(b" :")
    parts = head.split()
    if not parts:
        return b"", []
    params = parts[1:] + ([trailing] if sep else [])
    return parts[0].upper(), params


def irc_pong(params: list[bytes]) -> bytes:
    """The answer to ``PING :token`` (an unanswered PING ends the connection)."""
    return b"PONG :%s\r\n" % (params[-1] if params else b"")


def resp_command(*args: bytes) -> bytes:
    """Encode a Redis command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def resp_publish(payload: bytes, channel: bytes = REDIS_CHANNEL) -> bytes:
    """PUBLISH channel payload."""
    return resp_command(b"PUBLISH", channel, payload)


def resp_subscribe(channel: bytes = REDIS_CHANNEL) -> bytes:
    """SUBSCRIBE channel."""
    return resp_command(b"SUBSCRIBE", channel)


def resp_push(payload: bytes, channel: bytes = REDIS_CHANNEL) -> bytes:
    """The frame a subscriber receives for one PUBLISH (RESP2 pub/sub push)."""
    return resp_command(b"message", channel, payload)


def resp_push_newlines() -> int:
    """Newlines in one pushed pub/sub message: *3, $7, message, $n, channel, $m, payload.

    The driver counts newlines (bytes.count runs in C) and divides by this to get
    deliveries, so it never parses RESP on the hot path. Payloads never contain '\\n'.
    """
    return 7


def make_stamp(sender: int, seq: int, intended_ns: int, size: int) -> bytes:
    """A payload of at least ``size`` bytes that carries sender, sequence and intent."""
    head = b"@%d %d %d" % (sender, seq, intended_ns)
    if len(head) < size:
        head += b" " + b"x" * (size - len(head) - 1)
    return head


def filler(size: int) -> bytes:
    """An untimed payload of exactly ``size`` bytes for flood messages."""
    if size < 1:
        raise ValueError("payload size must be >= 1")
    return b"f" * size


@dataclass(frozen=True)
class Stamp:
    """What a receiver learns from a timed message."""

    sender: int
    seq: int
    intended_ns: int


def parse_stamp(line: bytes) -> Stamp | None:
    """Find and decode the stamp in one received line (chat or RESP), else None.

    Notices (``* x joined``), errors, IRC JOINs and RESP framing lines carry no stamp and
    give None. A trailing ``\\r`` (IRC) is whitespace to ``int()``.
    """
    at = line.rfind(STAMP_MARK)
    if at < 0:
        return None
    parts = line[at + 1 :].split(None, 3)
    if len(parts) < 3:
        return None
    try:
        return Stamp(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return None


class LineSplitter:
    """Accumulates bytes and yields complete lines; the partial tail is kept.

    Only timing receivers use it; counting receivers never look inside the bytes.
    """

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete lines (without '\\n') that data finishes."""
        buf = self._tail + data if self._tail else data
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        return lines


class SeqChecker:
    """Per-receiver check that each sender's messages arrive once and in order."""

    __slots__ = ("_next", "lost", "reordered")

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self.lost = 0
        self.reordered = 0

    def see(self, sender: int, seq: int) -> None:
        """Record one arrival; a jump forward is a loss, a step back a reorder."""
        expect = self._next.get(sender)
        if expect is None or seq == expect:
            self._next[sender] = seq + 1
        elif seq > expect:
            self.lost += seq - expect
            self._next[sender] = seq + 1
        else:
            self.reordered += 1


def ws_frames_starting(data: bytes, prefix: bytes, mark: int) -> list[bytes]:
    """Payloads of the whole, short server frames in ``data`` whose payload starts with
    ``prefix`` (IRC ``PING``s over WebSocket), found without parsing the chunk: a chunk
    of lazily read bytes may start anywhere in a frame, so each occurrence of ``prefix``
    counts when the two bytes before it are a frame header (``mark``, then a length
    under 126) and the frame ends inside ``data``. A frame split across two reads is
    missed, as a split line is over TCP (see ``Fleet._answer_pings``)."""
    out = []
    at = data.find(prefix)
    while at >= 0:
        if at >= 2 and data[at - 2] == mark and data[at - 1] < 126:
            end = at + data[at - 1]
            if end <= len(data):
                out.append(data[at:end])
        at = data.find(prefix, at + 1)
    return out
