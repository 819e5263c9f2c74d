"""chatd's line protocol (``shared/PROTOCOL.md``) from a load client's side, sans-IO.

``LineDialect`` implements ``chatload.Dialect``: the nick is the first line, ``/join ROOM``
moves rooms, every other line is chat; the server answers with ``* `` notices, ``! ``
errors and ``<nick>: <text>`` chat lines. The contract fixes only that confirmations are
``* `` lines naming the nick (and room), so the checks here match words, not sentences.
"""

from __future__ import annotations

import enum
import re

import chatload
from chatload.dialect import LineKind
from chatload.stamp import MAGIC, Message, encode_stamp, parse_text

#: What the server's chat line starts with: every member but the sender gets
#: ``<nick>: <text>``.
_SEP = b": "
_MAGIC_SP = MAGIC + b" "
_NICK_CHARS = r"A-Za-z0-9_\-\[\]\\^{}|`"
_TOKEN_RE = re.compile(rf"[#{_NICK_CHARS}]+")

#: The server's default ``--max-line``: a chat text longer than this is refused.
MAX_LINE = 4096


class State(enum.Enum):
    """Where a connection is in the session."""

    #: Connected, nothing sent.
    NEW = "new"
    #: Nick sent, waiting for the ``* `` confirmation naming it.
    REGISTERING = "registering"
    #: Registered (in the server's default room).
    READY = "ready"
    #: ``/join`` sent, waiting for the notice that we are in the room.
    JOINING = "joining"
    #: In the room.
    JOINED = "joined"


def _tokens(text: str) -> set[str]:
    """Case-folded words of a notice; room names lose their optional ``#``."""
    return {tok.lower().lstrip("#") for tok in _TOKEN_RE.findall(text)}


def confirms_registration(line: str, nick: str) -> bool:
    """Whether ``line`` is the server's ``* `` confirmation that names our nick.

    The contract says the confirmation names the nick and the room; the welcome lines sent
    before it cannot name a nick we had not sent yet, so matching the nick is enough.
    """
    return line.startswith("* ") and nick.lower() in _tokens(line[2:])


def confirms_join(line: str, nick: str, room: str) -> bool:
    """Whether ``line`` is the ``* `` notice telling us that we are now in ``room``.

    The contract fixes only that a join produces ``* `` lines naming the nick and room, so
    accept a notice that names the room and either our nick or "you". That rejects, say,
    ``* bob left #lobby for #load0``, which another member's move can put in front of ours.
    """
    if not line.startswith("* "):
        return False
    words = _tokens(line[2:])
    return room.lower().lstrip("#") in words and (nick.lower() in words or "you" in words)


def encode_message(sender: str, seq: int, intended_us: int, payload_bytes: int) -> bytes:
    """One chat line (with its ``\\n``) whose text is ``chatload.encode_stamp``."""
    return encode_stamp(sender, seq, intended_us, payload_bytes) + b"\n"


def chat_line(text: bytes) -> bytes:
    """One chat line; the text must not start with ``/`` (that would be a command)."""
    if b"\n" in text or b"\r" in text or text.startswith(b"/"):
        raise ValueError("chat text must be one line and must not start with '/'")
    return text + b"\n"


def classify(line: bytes) -> tuple[LineKind, Message | None]:
    """Classify one server line (without terminator) and parse it if it is ours.

    Raises ``ProtocolError`` for a line that looks like ours but is mangled, because that
    means the server corrupted a message in transit.
    """
    if line.startswith(b"* "):
        return LineKind.NOTICE, None
    if line.startswith(b"! "):
        return LineKind.ERROR, None
    stamped, sep, text = line.partition(_SEP)
    if not sep or not text.startswith(_MAGIC_SP) or b" " in stamped:
        return LineKind.OTHER, None
    return LineKind.MESSAGE, parse_text(stamped, text, line)


class LineDialect:
    """``chatload.Dialect`` for chatd's line protocol; one per connection."""

    name = "line"
    default_port = 4040
    #: A chat line's text may be up to the server's ``--max-line``.
    max_payload = MAX_LINE
    #: The line protocol has no keep-alive to answer.
    ping_marker = None

    def __init__(self) -> None:
        self.nick = ""
        self.room = ""
        self.state = State.NEW

    def register(self, nick: str) -> bytes:
        """The first line is the nick."""
        self.nick = nick
        self.state = State.REGISTERING
        return _line(nick)

    def renick(self, nick: str) -> bytes:
        """Another nick after a refusal: the server is still waiting for one."""
        return self.register(nick)

    def join(self, room: str) -> bytes:
        self.room = room
        self.state = State.JOINING
        return _line(f"/join {room}")

    chat = staticmethod(chat_line)

    def quit(self) -> bytes:
        return b"/quit\n"

    def handshake_event(self, line: bytes) -> chatload.HandshakeEvent | None:
        """What ``line`` means while registering or joining; None: nothing for us."""
        text = line.decode("utf-8", "replace")
        if self.state is State.REGISTERING:
            if text.startswith("! "):
                return chatload.RegisterRefused(text[2:], retry=True)
            if confirms_registration(text, self.nick):
                self.state = State.READY
                return chatload.Registered(self.nick)
        elif self.state is State.JOINING:
            if text.startswith("! "):
                return chatload.JoinRefused(text[2:])
            if confirms_join(text, self.nick, self.room):
                self.state = State.JOINED
                return chatload.Joined(self.room)
        return None

    classify = staticmethod(classify)

    def pong(self, line: bytes) -> bytes:
        raise ValueError("the line protocol has no PING")

    def counter(self, tail: bytes = b"") -> chatload.NewlineCounter:
        return chatload.NewlineCounter()


def _line(text: str) -> bytes:
    if "\n" in text or "\r" in text:
        raise ValueError(f"not one line: {text!r}")
    return text.encode("utf-8") + b"\n"
