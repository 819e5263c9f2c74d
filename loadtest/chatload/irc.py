"""IRC (RFC 1459/2812 client side) for load clients, sans-IO: framing, parsing, registration.

``IrcDialect`` implements ``chatload.Dialect``, so the same Locust users that load chatd's
line protocol load any IRC server -- chatd's IRC listener, ngircd, InspIRCd -- with the same
stamped messages and the same measurements. What a real daemon needs from a client, and
where this module does it:

* **Registration** (``register``): ``NICK`` and ``USER`` at once; ``433``/``436``/``437``
  (nick taken) ask for another nick; ``001`` says we are registered (its first parameter
  is our nick as the server knows it, in case the server shortened it); only after the end
  of the MOTD (``376``, or ``422`` when there is none) is the client ready to ``JOIN``.
* **Keep-alive**: every ``PING`` gets a ``PONG`` with the same token, during registration
  (some daemons ping before ``001``) and for the whole session, by timing and counting
  receivers alike (``IrcCounter`` finds them without splitting every read into lines).
* **Joining**: our own ``JOIN`` echo confirms the join; the join errors (``471`` channel
  full, ``473``/``474``/``475``, ``403``/``405``/``476``...) naming the channel refuse it.
* **Tolerance**: ``NOTICE``s, numerics the client does not know, ``MODE``/``JOIN``/``PART``
  of others and IRCv3 message tags are all just notices; ``ERROR`` announces the close.
* **Limits**: no line we send exceeds 512 bytes with its CRLF (``encode`` refuses, since it
  would be our bug); nicks are at most nine characters (``chat_core.NICK_MAX``, RFC 2812's
  and ngircd's default NICKLEN) because the server's NICKLEN (``005``) arrives only after
  the first ``NICK``. ISUPPORT is kept in ``IrcDialect.isupport``.

bench's lean driver uses the same dialect for its handshake, :func:`privmsg` for its
senders' lines and :func:`pongs` for the ``PING``s it finds in the reads it only counts.

Messages to the channel are ``PRIVMSG #room :LT <nick> <seq> <stamp_us> <padding>``; the
server relays them as ``:<nick>!<user>@<host> PRIVMSG #room :<text>`` to every other member,
which ``classify`` parses on the hot path with a few ``bytes`` operations.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import chatload
from chatload.dialect import LineKind
from chatload.stamp import MAGIC, Message, parse_text

#: RFC 1459: a line is at most 512 bytes including its CRLF.
MAX_LINE = 512
#: Largest ``--chat-payload`` over IRC. Our own line is ``PRIVMSG <chan> :<text>\r\n``
#: (under 30 bytes of framing for the load test's channels), but the server relays it with
#: a ``:<nick>!<user>@<host> `` prefix to the same 512-byte limit: 400 leaves 80 bytes for
#: that prefix, enough for a 9-character nick and user and a 60-character host. A longer
#: prefix makes some servers cut the padding, never the header, so parsing is safe anyway.
MAX_PAYLOAD = 400
#: Real name sent in ``USER``.
REALNAME = "chatd loadtest"

#: Nick in use, collided or temporarily unavailable: another nick may do.
NICK_TAKEN = frozenset({"433", "436", "437"})
#: No nick, or one the server will not take (too long, bad characters): retrying the
#: same scheme is pointless.
NICK_INVALID = frozenset({"431", "432"})
#: Refusals of the connection itself (password, host not allowed, banned).
REGISTER_FATAL = frozenset({"463", "464", "465"})
#: Join errors; their second parameter is the channel.
JOIN_ERRORS = frozenset(
    {"403", "405", "437", "471", "473", "474", "475", "476", "477", "479", "489", "520"}
)
#: End of the MOTD, or no MOTD: registration is complete.
END_OF_MOTD = frozenset({"376", "422"})

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
#: ISUPPORT CASEMAPPING values and how they lower-case (rfc1459 is the RFC default).
_CASEMAPS = {
    "ascii": str.maketrans(_UPPER, _LOWER),
    "rfc1459": str.maketrans(_UPPER + "[]\\~", _LOWER + "{}|^"),
    "strict-rfc1459": str.maketrans(_UPPER + "[]\\", _LOWER + "{}|"),
}
_PRIVMSG = b"PRIVMSG"
_MAGIC_SP = MAGIC + b" "
_FORBIDDEN = (b"\r", b"\n", b"\0")


class State(enum.Enum):
    """Where a connection is in registration and joining."""

    #: Connected, nothing sent.
    NEW = "new"
    #: ``NICK``/``USER`` sent, waiting for ``001``.
    REGISTERING = "registering"
    #: ``001`` received, waiting for the end of the MOTD.
    WELCOMED = "welcomed"
    #: Registered: ready to join.
    READY = "ready"
    #: ``JOIN`` sent, waiting for our own ``JOIN`` echo.
    JOINING = "joining"
    #: In the channel.
    JOINED = "joined"


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One parsed IRC line: ``[@tags] [:source] COMMAND params...``."""

    #: IRCv3 message tags, unparsed ("" when none).
    tags: str
    #: ``nick!user@host`` or a server name ("" when none).
    source: str
    #: Upper-cased command or three-digit numeric.
    command: str
    #: Parameters, the trailing one (after `` :``) included as the last.
    params: tuple[str, ...]

    @property
    def text(self) -> str:
        """The last parameter (a reason, a message, a numeric's human text)."""
        return self.params[-1] if self.params else ""


def parse(line: bytes) -> IrcMessage:
    """Parse one line (terminator stripped). Undecodable bytes are replaced, not fatal.

    Raises ``ProtocolError`` for a line without a command: the peer is not speaking IRC.
    """
    text = line.decode("utf-8", "replace").lstrip(" ")
    tags = source = ""
    if text.startswith("@"):
        tags, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    head, colon, trailing = text.partition(" :")
    params = [p for p in head.split(" ") if p]  # SPACE separates; tabs are data
    if not params or text.startswith(":"):
        raise chatload.ProtocolError(f"IRC line without a command: {line[:120]!r}")
    if colon:
        params.append(trailing)
    return IrcMessage(tags, source, params[0].upper(), tuple(params[1:]))


def encode(command: str, *params: str) -> bytes:
    """One IRC line with its CRLF. Only the last parameter may hold spaces or start with ``:``.

    Raises ``ValueError`` for a line over ``MAX_LINE`` bytes or a parameter with CR, LF or
    NUL: that would be the load test's bug, never the server's.
    """
    parts = [command]
    for i, param in enumerate(params):
        if any(c in param for c in "\r\n\0"):
            raise ValueError(f"IRC parameter with CR, LF or NUL: {param!r}")
        needs_colon = not param or " " in param or param.startswith(":")
        if needs_colon and i != len(params) - 1:
            raise ValueError(f"only the last IRC parameter may be empty or hold spaces: {param!r}")
        parts.append(":" + param if needs_colon else param)
    line = " ".join(parts).encode("utf-8") + b"\r\n"
    if len(line) > MAX_LINE:
        raise ValueError(f"IRC line of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def nick_of(source: str) -> str:
    """The nick in a ``nick!user@host`` source (a server name stays as it is)."""
    return source.partition("!")[0]


def pong_for(msg: IrcMessage) -> bytes:
    """The ``PONG`` answering ``msg`` (a ``PING``): the same token back."""
    return encode("PONG", msg.text)


def privmsg(channel: bytes, text: bytes) -> bytes:
    """``PRIVMSG <channel> :<text>``; ``ValueError`` past 512 bytes or with CR/LF/NUL."""
    return _privmsg_line(b"PRIVMSG " + channel + b" :", text)


def _privmsg_line(head: bytes, text: bytes) -> bytes:
    line = head + text + b"\r\n"
    if len(line) > MAX_LINE or not head or any(c in text for c in _FORBIDDEN):
        raise ValueError(f"cannot send {len(line)} bytes of chat as one IRC line")
    return line


def pongs(lines: Iterable[bytes]) -> list[bytes]:
    """The ``PONG``s owed for the ``PING``s among ``lines`` (CR stripped or not). A line
    that does not parse is skipped: a counting receiver hands in the pieces of a read it
    did not frame, whose first one may start inside a line."""
    out = []
    for line in lines:
        if b"PING" not in line:
            continue
        try:
            msg = parse(line.rstrip(b"\r"))
        except chatload.ProtocolError:
            continue
        if msg.command == "PING":
            out.append(pong_for(msg))
    return out


class IrcCounter:
    """A counting receiver's read handler: count lines, and answer every ``PING``.

    Counting receivers exist to save the load generator work, so this does not split each
    read into lines: it counts newlines, and only when ``PING`` occurs in the read (or
    straddles the previous one) does it split that read to find and answer the ping. The
    incomplete last line is kept (bounded like ``LineSplitter``) so a ping split across two
    reads is answered too.
    """

    __slots__ = ("_tail",)

    def __init__(self, tail: bytes = b"") -> None:
        self._tail = tail

    def feed(self, data: bytes) -> tuple[int, Sequence[bytes]]:
        """(lines completed by ``data``, ``PONG`` lines to send back)."""
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail += data
            if len(self._tail) > chatload.MAX_PARTIAL_LINE:
                raise chatload.ProtocolError(f"line longer than {chatload.MAX_PARTIAL_LINE} bytes")
            return 0, ()
        tail = self._tail
        replies: list[bytes] = []
        if b"PING" in data or (tail and b"PING" in tail + data[:3]):
            for line in (tail + data[:cut]).split(b"\n"):
                if b"PING" in line:
                    msg = parse(line.rstrip(b"\r"))
                    if msg.command == "PING":
                        replies.append(pong_for(msg))
        self._tail = data[cut + 1 :]
        if len(self._tail) > chatload.MAX_PARTIAL_LINE:
            raise chatload.ProtocolError(f"line longer than {chatload.MAX_PARTIAL_LINE} bytes")
        return data.count(b"\n"), replies


class IrcDialect:
    """``chatload.Dialect`` for IRC; one per connection."""

    name = "irc"
    default_port = 6667
    max_payload = MAX_PAYLOAD
    ping_marker = b"PING"

    def __init__(self) -> None:
        self.nick = ""
        self.room = ""
        self.state = State.NEW
        #: ISUPPORT (``005``) tokens: ``{"NICKLEN": "31", "CHANTYPES": "#&+", ...}``.
        self.isupport: dict[str, str] = {}
        self._chantypes = b"#&+!"
        self._lower = _CASEMAPS["rfc1459"]
        self._privmsg = b""

    # ----------------------------------------------------------------- what to send

    def register(self, nick: str) -> bytes:
        """``NICK`` and ``USER`` in one write (the user name is the nick: at most 9 bytes)."""
        self.nick = nick
        self.state = State.REGISTERING
        return encode("NICK", nick) + encode("USER", nick, "0", "*", REALNAME)

    def renick(self, nick: str) -> bytes:
        """Another ``NICK`` after ``433``: registration goes on with it."""
        self.nick = nick
        return encode("NICK", nick)

    def join(self, room: str) -> bytes:
        self.room = room
        self.state = State.JOINING
        line = encode("JOIN", room)
        self._privmsg = b"PRIVMSG " + room.encode("utf-8") + b" :"
        return line

    def chat(self, text: bytes) -> bytes:
        """``PRIVMSG <room> :<text>``; ``ValueError`` past 512 bytes or with CR/LF/NUL."""
        return _privmsg_line(self._privmsg, text)

    def quit(self) -> bytes:
        return encode("QUIT", "load test done")

    def pong(self, line: bytes) -> bytes:
        return pong_for(parse(line))

    def counter(self, tail: bytes = b"") -> IrcCounter:
        return IrcCounter(tail)

    # ----------------------------------------------------------------- what the server says

    @property
    def nicklen(self) -> int | None:
        """The server's NICKLEN from ISUPPORT, if it announced one."""
        value = self.isupport.get("NICKLEN", "")
        return int(value) if value.isdigit() else None

    def same(self, a: str, b: str) -> bool:
        """Nick or channel equality under the server's CASEMAPPING."""
        return a.translate(self._lower) == b.translate(self._lower)

    def handshake_event(self, line: bytes) -> chatload.HandshakeEvent | None:
        """What ``line`` means while registering or joining; None: nothing for us."""
        if not line.strip():
            return None
        msg = parse(line)
        cmd = msg.command
        if cmd == "PING":
            return chatload.Reply(pong_for(msg))
        if cmd == "ERROR":
            return chatload.Closing(msg.text)
        if cmd == "005":
            self._isupport(msg.params[1:-1] if len(msg.params) > 2 else msg.params[1:])
            return None
        if cmd == "NICK" and self.same(nick_of(msg.source), self.nick) and msg.params:
            self.nick = msg.params[0]  # the server renamed us
            return None
        if self.state is State.REGISTERING:
            if cmd in NICK_TAKEN:
                return chatload.RegisterRefused(f"{cmd} {msg.text}", retry=True)
            if cmd in NICK_INVALID or cmd in REGISTER_FATAL:
                return chatload.RegisterRefused(f"{cmd} {msg.text}", retry=False)
            if cmd == "001":
                if msg.params and msg.params[0] not in ("", "*"):
                    self.nick = msg.params[0]
                self.state = State.WELCOMED
        elif self.state is State.WELCOMED:
            if cmd in END_OF_MOTD:
                self.state = State.READY
                return chatload.Registered(self.nick)
        elif self.state is State.JOINING:
            if cmd == "JOIN" and msg.params and self.same(nick_of(msg.source), self.nick):
                if self.same(msg.params[0], self.room):
                    self.state = State.JOINED
                    return chatload.Joined(self.room)
            if cmd in JOIN_ERRORS and len(msg.params) >= 2 and self.same(msg.params[1], self.room):
                return chatload.JoinRefused(f"{cmd} {msg.text}")
        return None

    def _isupport(self, tokens: Sequence[str]) -> None:
        for token in tokens:
            key, _, value = token.partition("=")
            if key.startswith("-"):
                self.isupport.pop(key[1:], None)
                continue
            self.isupport[key] = value
            if key == "CHANTYPES" and value:
                self._chantypes = value.encode("ascii", "replace")
            elif key == "CASEMAPPING" and value.lower() in _CASEMAPS:
                self._lower = _CASEMAPS[value.lower()]

    def classify(self, line: bytes) -> tuple[LineKind, Message | None]:
        """Classify one line of the session; parse it if it is a load-test message.

        The hot path of a timing receiver, so it slices ``bytes`` instead of calling
        ``parse``: a ``PRIVMSG`` to a channel whose text starts with ``LT `` is ours (the
        stamped nick is the source's nick part); ``PING`` must be answered; ``ERROR``
        announces the close; a 4xx/5xx numeric means the server refused something we
        sent; anything else is a notice. ``ProtocolError`` for a mangled load-test text.
        """
        if line[:1] == b"@":
            line = line.partition(b" ")[2].lstrip(b" ")
        if line[:1] == b":":
            source, _, rest = line.partition(b" ")
            rest = rest.lstrip(b" ")
        else:
            source, rest = b"", line
        command, _, args = rest.partition(b" ")
        if command == _PRIVMSG:
            target, _, text = args.partition(b" ")
            if text[:1] == b":":
                text = text[1:]
            if target and target[:1] in self._chantypes and text.startswith(_MAGIC_SP):
                stamped = source[1:].partition(b"!")[0]
                return LineKind.MESSAGE, parse_text(stamped, text, line)
            return LineKind.OTHER, None
        if command == b"PING":
            return LineKind.PING, None
        if command == b"ERROR":
            return LineKind.CLOSING, None
        if len(command) == 3 and command.isdigit() and command[:1] in b"45":
            return LineKind.ERROR, None
        if not command:
            return LineKind.OTHER, None
        return LineKind.NOTICE, None
