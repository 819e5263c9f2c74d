"""The line dialect, sans-IO: framing, command parsing and event encoding.

Nothing here touches a socket or a clock. An engine feeds the bytes it read to a
:class:`LineDecoder` and pulls :data:`Item` values out of it (a decoded line, or a
:class:`DecodeError` that the engine answers with an error line); it turns lines into
commands with :func:`parse_command`; and it turns hub events into wire bytes with
:func:`encode`. All three engines share this module, so a benchmark between them
compares I/O models and nothing else.

Modelled on h11: ``feed()`` only stores, ``next_item()`` returns one item or ``None``
(need more data), and faults of the peer are values, never exceptions.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from chatd import events as ev

#: Longest accepted line, not counting the terminator (PROTOCOL.md, ``--max-line``).
DEFAULT_MAX_LINE = 4096

#: C0 controls except TAB and the IRC formatting codes (bold 0x02, colour 0x03,
#: reset 0x0F, reverse 0x16, italic 0x1D, underline 0x1F), plus DEL and the C1 block
#: (U+0080..U+009F: U+009B is a one-character CSI on some terminals). Any of these in
#: a line could move another user's cursor or rewrite their screen, so the line is
#: refused instead of relayed.
_FORBIDDEN = re.compile("[\x00\x01\x04-\x08\x0a-\x0e\x10-\x15\x17-\x1c\x1e\x7f-\x9f]")


class DecodeError(enum.Enum):
    """A fault in the peer's bytes; the line is dropped and the peer gets an error."""

    #: The line exceeded the configured limit; it is discarded up to its end.
    TOO_LONG = "line too long"
    #: The line is not valid UTF-8.
    BAD_UTF8 = "line is not valid UTF-8"
    #: The line holds a control character that could act on a terminal.
    CONTROL_CHAR = "line contains a control character"


#: What :meth:`LineDecoder.next_item` yields: a complete, valid line or an error.
Item = str | DecodeError


class LineDecoder:
    """Split a byte stream into lines, whatever the segmentation.

    The buffer never holds more than ``max_line + 1`` bytes of an unterminated line
    (the ``+ 1`` leaves room for the ``\\r`` of a ``\\r\\n`` that has not arrived
    yet): past that the line is reported as too long at once and the rest of it is
    skipped as it arrives, so a peer that never sends ``\\n`` costs a bounded amount
    of memory however much it sends.
    """

    __slots__ = ("_buf", "_pos", "_max", "_discarding")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._buf = bytearray()
        self._pos = 0
        self._max = max_line
        self._discarding = False

    def feed(self, data: bytes) -> None:
        """Store bytes received from the peer; call :meth:`next_item` to use them."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as items."""
        return len(self._buf) - self._pos

    def next_item(self) -> Item | None:
        """Return the next line or error, or ``None`` when a complete line is missing."""
        buf = self._buf
        limit = self._max
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                return self._need_data()
            start = self._pos
            self._pos = end + 1
            if self._discarding:
                # The end of an overlong line whose error was already reported.
                self._discarding = False
                continue
            if end > start and buf[end - 1] == 13:  # strip one "\r" before "\n"
                end -= 1
            if end - start > limit:
                return DecodeError.TOO_LONG
            raw = bytes(buf[start:end])
            if not raw or raw.isspace():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return DecodeError.BAD_UTF8
            if _FORBIDDEN.search(line):
                return DecodeError.CONTROL_CHAR
            return line

    def _need_data(self) -> DecodeError | None:
        """Compact the buffer; report an unterminated line that is already too long."""
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        if self._discarding:
            buf.clear()
            return None
        if len(buf) > self._max + 1 or (len(buf) == self._max + 1 and buf[-1] != 13):
            buf.clear()
            self._discarding = True
            return DecodeError.TOO_LONG
        return None

    def items(self) -> list[Item]:
        """Every complete item buffered now (a convenience for tests and simple engines)."""
        out: list[Item] = []
        while (item := self.next_item()) is not None:
            out.append(item)
        return out


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Say:
    """A chat line to the current room."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A ``/command`` with its name lower-cased and its raw argument string."""

    #: Lower-cased command name without the slash, e.g. ``"nick"``.
    name: str
    #: Everything after the first run of spaces, with trailing spaces removed.
    args: str


def parse_command(line: str) -> Say | Command:
    """Classify one decoded line.

    ``//text`` is an escape for a chat line that begins with a slash (as in IRC
    clients): it is sent as ``/text``. Argument checking is the hub's job, since the
    rules (what a nick or a room may be) are chat rules, not wire rules.
    """
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    name, _, args = line[1:].partition(" ")
    return Command(name.lower(), args.strip())


# --------------------------------------------------------------------------- encoding

HELP_LINES = (
    "commands:",
    "/nick NEW         change your nickname",
    "/join ROOM        leave this room and enter ROOM (created on demand)",
    "/who              list the members of your room",
    "/rooms            list the rooms and how many are in each",
    "/msg NICK TEXT    send a private message",
    "/me TEXT          act: shown to the room as '* NICK TEXT'",
    "/ping [TOKEN]     the server answers '* pong'",
    "/stats            server counters",
    "/quit [REASON]    leave",
    "/help             this list",
    "a line starting with // is sent as chat starting with /",
)


def _notice(text: str) -> bytes:
    return ("* " + text + "\n").encode()


def _reason(reason: str) -> str:
    return f" ({reason})" if reason else ""


def encode(event: ev.Event) -> bytes:
    """Render one hub event as line-protocol bytes (one or more ``\\n``-ended lines).

    Called once per event, whatever the number of recipients: the engines append the
    returned object itself to every recipient's output queue.
    """
    match event:
        case ev.Message(nick=nick, text=text):
            return f"{nick}: {text}\n".encode()
        case ev.Messages(nick=nick, texts=texts):
            prefix = nick + ": "
            return "".join([prefix + text + "\n" for text in texts]).encode()
        case ev.Action(nick=nick, text=text):
            return _notice(f"{nick} {text}")
        case ev.PrivateMessage(sender=sender, text=text):
            return f"{sender} (private): {text}\n".encode()
        case ev.PrivateSent(target=target, text=text):
            return _notice(f"-> {target}: {text}")
        case ev.Joined(nick=nick, room=room):
            return _notice(f"{nick} joined {room}")
        case ev.Left(nick=nick, room=room, reason=reason):
            return _notice(f"{nick} left {room}{_reason(reason)}")
        case ev.Quit(nick=nick, reason=reason):
            return _notice(f"{nick} quit{_reason(reason)}")
        case ev.NickChanged(old=old, new=new):
            return _notice(f"{old} is now known as {new}")
        case ev.Registered(nick=nick, room=room, members=members):
            return _notice(f"you are {nick}, in {room} ({members} here); /help lists commands")
        case ev.YouJoined(room=room, members=members):
            return _notice(f"you joined {room} ({members} here)")
        case ev.Greeting(server=server):
            return _notice(f"welcome to {server}") + _notice("please choose a nickname")
        case ev.WhoReply(room=room, nicks=nicks):
            return _notice(f"{room} ({len(nicks)}): {' '.join(nicks)}")
        case ev.RoomsReply(rooms=rooms):
            listing = ", ".join(f"{name} ({count})" for name, count in rooms)
            return _notice(f"rooms ({len(rooms)}): {listing}")
        case ev.HelpReply():
            return b"".join(_notice(line) for line in HELP_LINES)
        case ev.Pong(token=token):
            return _notice(f"pong {token}" if token else "pong")
        case ev.StatsReply(counters=counters):
            return _notice("stats: " + " ".join(f"{k}={v}" for k, v in counters))
        case ev.Bye(reason=reason):
            return _notice(f"bye{_reason(reason)}")
        case ev.ServerShutdown():
            return _notice("server shutting down")
        case ev.Error(text=text):
            return ("! " + text + "\n").encode()
    raise TypeError(f"no line encoding for {event!r}")


SERVER_FULL = b"! server full\n"
