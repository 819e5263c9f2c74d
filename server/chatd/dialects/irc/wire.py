"""The IRC wire format, sans-IO: framing, message parsing, encoding, text splitting, CTCP.

Nothing here touches a socket or a clock. An engine feeds the bytes it read to an
:class:`IrcDecoder` and pulls :data:`Item` values out of it: a parsed :class:`Message`,
or a value naming a fault of the peer (:class:`InputTooLong`, :class:`InvalidUtf8`,
:class:`Malformed`), or a :class:`Blank` count of skipped empty lines for flood
control. :func:`encode` turns a reply into one ready ``bytes`` line; it raises
``ValueError`` for what only a bug of ours can produce (a CR in a parameter, a space in a
middle parameter), because the peer never chose those values.

Modelled on h11 like the line dialect's ``chatd.protocol``: ``feed()`` only stores,
``next_item()`` returns one item or ``None`` (need more data), ``feed_eof()`` makes end of
input data: an unterminated last line is still delivered, once.

Grammar (modern.ircdocs.horse "Message format", IRCv3 message-tags)::

    [@tags SPACE] [:source SPACE] command *(SPACE param) [SPACE :trailing] (CR LF | LF | CR)

Choices, each with its reason:

* **Terminators.** ``\r\n``, a bare ``\n`` and a bare ``\r`` all end a line, as in
  ngircd (checked: ``NICK abc\rUSER a b c :d\r`` registers on ngircd 26.1, and
  ``PING x1\rPING x2\n`` gets two PONGs) and the ratbox/solanum line buffer; ergo
  splits on ``\n`` only. irctest only ever sends ``\r\n``. Accepting ``\r`` means a
  ``\r`` can never reach a parameter, so a relayed text can never smuggle one into
  another client's stream. A ``\r\n`` split between two ``feed()`` calls still counts
  as one terminator (``_skip_lf``); ``\n\r`` is a line end and an empty line.
* **Lengths.** The 512-byte limit of RFC 1459 counts the CR LF, so the part of a line
  after its tags may hold ``max_line - 2`` = 510 bytes (extra spaces after the tag
  section count toward it). The tag section (``@`` to the space after it, both
  included) may hold ``max_tags`` bytes: IRCv3 message-tags allows 8191 for a whole tag
  section but only 4094 bytes of tag data *from a client* (the rest is the server's to
  add), so a server reading clients uses 4096 = 4094 + ``@`` + space, the default.
  irctest's message_tags.py (testLengthLimits) sends a 4096-byte section that must pass
  and a 4097-byte one that must get 417, messages.py (testLineTooLong) a 4120-byte one
  that must get 417. ``max_tags=MAX_TAGS_TOTAL`` reads server-to-client traffic. A line
  over either limit is reported once as :class:`InputTooLong` (the server answers 417
  ERR_INPUTTOOLONG, as ergo does and irctest requires) as soon as the buffered part
  proves it is too long, and the rest of it is dropped as it arrives: memory stays
  bounded by ``max_tags + max_line`` per connection whatever the peer sends.
* **UTF-8.** A line that is not valid UTF-8 becomes :class:`InvalidUtf8`, carrying the
  message decoded as latin-1 (every byte one character, nothing lost), so the handler
  knows the command and label and can answer ``FAIL <command> INVALID_UTF8`` — what ergo
  does with ``UTF8ONLY`` advertised, and what irctest's utf8.py accepts. We follow ergo,
  not InspIRCd (which relays raw bytes, being byte-transparent C++): chatd relays
  between dialects as ``str``, the line dialect already refuses invalid UTF-8, and
  relaying a latin-1 guess re-encoded as UTF-8 would show every other client bytes the
  sender never sent. A lenient handler (USER's realname, say) may still use the latin-1
  message.
* **NUL** anywhere in a line is :class:`Malformed` (RFC 1459 forbids it, and a C
  client would cut the line there).
* **Parameters.** Runs of spaces separate parameters; a ``:`` starts the trailing
  parameter (possibly empty, may hold spaces). After 14 middle parameters the rest of
  the line is the 15th, with or without a colon (RFC 2812's grammar), so there are never
  more than 15 and no line is refused for having more.
* **Blank lines** (empty, or only spaces) are skipped and counted: a run of them comes
  out as one :class:`Blank` so that flood control can charge for them.
* **Bounded work.** Each ``next_item()`` call scans at most one line (at most
  ``max_tags + max_line`` bytes of it are ever buffered) plus at most
  :data:`MAX_BLANKS_PER_ITEM` blank lines; discarding the tail of an overlong line is one
  C-level search over what is buffered. An engine calls ``next_item()`` until ``None``
  after every ``feed()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from chatd.core.text import split_utf8

#: Longest line of RFC 1459, CR LF included, tags excluded (``max_line``).
DEFAULT_MAX_LINE = 512
#: Longest tag section a client may send, ``@`` and the space after it included: IRCv3
#: message-tags' 4094 bytes of client tag data, plus those two.
DEFAULT_MAX_TAGS = 4096
#: Longest tag section of any IRCv3 message (client and server tags together).
MAX_TAGS_TOTAL = 8191
#: Most parameters a message has (RFC 1459 / modern.ircdocs.horse).
MAX_PARAMS = 15
#: A run of blank lines is reported in items of at most this many, so one call to
#: ``next_item()`` never loops over an unbounded run of them.
MAX_BLANKS_PER_ITEM = 512


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed IRC message.

    ``tags`` are unescaped (a tag sent without a value maps to ``""``); ``source`` is the
    prefix without its colon, ``None`` when absent; ``command`` is upper-cased (ASCII
    only), numerics stay 3-digit strings; ``params`` has the trailing parameter last,
    its colon removed.
    """

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """This message as one wire line (see :func:`encode`)."""
        return encode(self.command, *self.params, source=self.source, tags=self.tags)


@dataclass(frozen=True, slots=True)
class InputTooLong:
    """A line over a length limit; it is dropped. Answer 417 ERR_INPUTTOOLONG."""

    #: ``"tags"`` when the tag section was over ``max_tags``, else ``"body"``.
    part: str


@dataclass(frozen=True, slots=True)
class InvalidUtf8:
    """A line that is not valid UTF-8, parsed from its latin-1 decoding.

    Answer ``FAIL <message.command> INVALID_UTF8 :...`` (and advertise ``UTF8ONLY``).
    """

    message: Message


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that is not an IRC message (no command, a NUL byte, ...); it is dropped."""

    reason: str


@dataclass(frozen=True, slots=True)
class Blank:
    """``count`` empty (or all-space) lines were skipped; flood control may charge them."""

    count: int


#: What :meth:`IrcDecoder.next_item` yields.
Item = Message | InputTooLong | InvalidUtf8 | Malformed | Blank

_LF = 0x0A
_CR = 0x0D
_SPACE = 0x20
_AT = 0x40
_EOL = re.compile(rb"[\r\n]")
#: The buffer of every decoder that holds nothing: shared (immutable, so no connection
#: can change it for the others). An idle connection then owns no bytearray, 56 bytes
#: each at 10,000 connections (issue 20's idle-memory goal); :meth:`IrcDecoder.feed`
#: makes one when bytes arrive and :meth:`IrcDecoder.next_item` drops it once consumed.
_EMPTY = b""
#: ``DEFAULT_MAX_LINE - 2``, computed once: an int above 256 is a new object each time
#: it is computed, 32 bytes per connection.
_DEFAULT_MAX_BODY = DEFAULT_MAX_LINE - 2


# --------------------------------------------------------------------------- decoder


class IrcDecoder:
    """Split a byte stream into IRC messages, whatever the segmentation.

    See the module docstring for the framing rules. ``feed()`` after ``feed_eof()`` is a
    bug of the caller and raises ``RuntimeError``.
    """

    __slots__ = (
        "_buf",
        "_pos",
        "_scan",
        "_max_body",
        "_max_tags",
        "_discarding",
        "_skip_lf",
        "_eof",
    )

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_tags: int = DEFAULT_MAX_TAGS) -> None:
        if max_line < 3 or max_tags < 2:
            raise ValueError("max_line must be at least 3 and max_tags at least 2")
        #: Received bytes: :data:`_EMPTY` or, while it holds some, a bytearray.
        self._buf: bytearray | bytes = _EMPTY
        #: Start of the first unconsumed byte in ``_buf``.
        self._pos = 0
        #: Where the search for a terminator resumes (bytes before it hold none).
        self._scan = 0
        #: Bytes allowed after the tag section: the line limit less its CR LF.
        self._max_body = _DEFAULT_MAX_BODY if max_line == DEFAULT_MAX_LINE else max_line - 2
        self._max_tags = max_tags
        #: An overlong line was reported; drop bytes up to its terminator.
        self._discarding = False
        #: The last terminator was a CR at the end of the buffer; a LF next is its pair.
        self._skip_lf = False
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Store bytes received from the peer; call :meth:`next_item` until ``None``."""
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        if self._buf:
            self._buf += data  # a bytearray (only the empty buffer is bytes): in place
        else:
            self._buf = bytearray(data)

    def feed_eof(self) -> None:
        """The peer closed its side: an unterminated last line becomes a line."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as items (for tests and accounting)."""
        return len(self._buf) - self._pos

    def items(self) -> list[Item]:
        """Every item complete now (a convenience for tests and simple callers)."""
        out: list[Item] = []
        while (item := self.next_item()) is not None:
            out.append(item)
        return out

    def next_item(self) -> Item | None:
        """The next message, fault or blank count; ``None`` when a complete line is missing."""
        buf = self._buf
        blanks = 0
        while True:
            if self._skip_lf and self._pos < len(buf):
                if buf[self._pos] == _LF:
                    self._pos += 1
                self._skip_lf = False
            start = self._pos
            m = _EOL.search(buf, max(start, self._scan))
            if m is None:
                return self._no_terminator(blanks)
            end = m.start()
            after = end + 1
            skip_lf = False
            if buf[end] == _CR:
                if after < len(buf):
                    if buf[after] == _LF:
                        after += 1
                else:
                    skip_lf = True
            if self._discarding:
                self._consume(after, skip_lf)
                self._discarding = False
                continue
            if end - start <= self._max_body and _is_blank(buf, start, end):
                self._consume(after, skip_lf)
                blanks += 1
                if blanks >= MAX_BLANKS_PER_ITEM:
                    return Blank(blanks)
                continue
            if blanks:
                # Report the run first; this line stays buffered for the next call.
                return Blank(blanks)
            self._consume(after, skip_lf)
            too_long = self._too_long(buf, start, end)
            if too_long is not None:
                return too_long
            return _decode_line(bytes(buf[start:end]))

    def _consume(self, after: int, skip_lf: bool) -> None:
        self._pos = self._scan = after
        self._skip_lf = skip_lf

    def _no_terminator(self, blanks: int) -> Item | None:
        """No terminator is buffered: compact, then deliver at EOF or report overlength."""
        buf = self._buf
        if self._discarding:
            self._buf = _EMPTY
            self._pos = self._scan = 0
            return Blank(blanks) if blanks else None
        pos = self._pos
        if pos:
            if pos == len(buf):
                buf = self._buf = _EMPTY  # all consumed: give the bytearray back
            else:
                assert isinstance(buf, bytearray)  # only the empty buffer is bytes
                del buf[:pos]
            self._pos = 0
        self._scan = len(buf)
        if not buf:
            self._buf = _EMPTY
            return Blank(blanks) if blanks else None
        if blanks:
            return Blank(blanks)
        too_long = self._too_long(buf, 0, len(buf))
        if self._eof:
            raw = bytes(buf)
            self._buf = _EMPTY
            self._scan = 0
            if too_long is not None:
                return too_long
            return Blank(1) if not raw.strip(b" ") else _decode_line(raw)
        if too_long is not None:
            self._buf = _EMPTY
            self._scan = 0
            self._discarding = True
        return too_long

    def _too_long(self, buf: bytearray | bytes, start: int, end: int) -> InputTooLong | None:
        """Whether ``buf[start:end]`` (a whole line, or the start of one) is over a limit.

        Growing a line only lengthens its parts, so a prefix over a limit proves the
        whole line is: the decoder can report before the terminator arrives.
        """
        body_start = start
        if buf[start] == _AT:
            limit = min(end, start + self._max_tags)
            space = buf.find(b" ", start, limit)
            if space < 0:
                return InputTooLong("tags") if end - start >= self._max_tags else None
            body_start = space + 1
        if end - body_start > self._max_body:
            return InputTooLong("body")
        return None


def _is_blank(buf: bytearray | bytes, start: int, end: int) -> bool:
    return start == end or not buf[start:end].strip(b" ")


def _decode_line(raw: bytes) -> Message | InvalidUtf8 | Malformed:
    if b"\0" in raw:
        return Malformed("NUL byte in line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        parsed = parse(raw.decode("latin-1"))
        return InvalidUtf8(parsed) if isinstance(parsed, Message) else parsed
    return parse(text)


# --------------------------------------------------------------------------- parsing

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: IRCv3 tag key: optional client prefix ``+``, optional vendor ``host/``, a name.
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n", "": ""}
_TAG_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)
_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"})


def unescape_tag_value(value: str) -> str:
    """IRCv3 tag value unescaping: ``\\:`` → ``;``, ``\\s`` → space, ``\\\\``, ``\\r``,
    ``\\n``; any other escaped character stands for itself; a lone trailing ``\\`` is
    dropped."""
    if "\\" not in value:
        return value
    return _TAG_ESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def escape_tag_value(value: str) -> str:
    """The inverse of :func:`unescape_tag_value`."""
    return value.translate(_ESCAPES)


def parse_tags(section: str) -> dict[str, str]:
    """``a=1;+b;c=x\\sy`` → ``{"a": "1", "+b": "", "c": "x y"}``.

    Items with an invalid key are dropped (IRCv3 leaves their handling to the
    implementation, and no handler could act on them); the last of duplicate keys wins.
    """
    tags: dict[str, str] = {}
    for item in section.split(";"):
        key, _, value = item.partition("=")
        if _TAG_KEY.fullmatch(key):
            tags[key] = unescape_tag_value(value)
    return tags


def parse(line: str) -> Message | Malformed:
    """Parse one line, terminator already removed (the decoder's job)."""
    n = len(line)
    i = 0
    tags: dict[str, str] = {}
    if line.startswith("@"):
        space = line.find(" ")
        if space < 0:
            return Malformed("tags but no command")
        tags = parse_tags(line[1:space])
        i = space
    while i < n and line[i] == " ":
        i += 1
    source = None
    if i < n and line[i] == ":":
        space = line.find(" ", i)
        if space < 0:
            return Malformed("source but no command")
        source = line[i + 1 : space]
        if not source:
            return Malformed("empty source")
        i = space
        while i < n and line[i] == " ":
            i += 1
    space = line.find(" ", i)
    if space < 0:
        space = n
    command = line[i:space].translate(_ASCII_UPPER)
    if not command:
        return Malformed("no command")
    i = space
    params: list[str] = []
    while True:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        if line[i] == ":":
            params.append(line[i + 1 :])
            break
        if len(params) == MAX_PARAMS - 1:
            params.append(line[i:])
            break
        space = line.find(" ", i)
        if space < 0:
            space = n
        params.append(line[i:space])
        i = space
    return Message(command, tuple(params), source, tags)


# --------------------------------------------------------------------------- encoding

_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")
_FORBIDDEN = re.compile("[\r\n\0]")


def encode(
    command: str,
    *params: str,
    source: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    colon: bool = False,
) -> bytes:
    """One ready wire line, ``\\r\\n`` included.

    The last parameter gets a ``:`` when it needs one (empty, starts with ``:``, holds a
    space), or always with ``colon``: text is sent that way by every server, and bots
    that split on `` :`` rely on it. Tag values are escaped; ``None`` or ``""`` sends the
    key alone. Raises ``ValueError`` for what the peer cannot have caused: a bad command,
    more than 15 parameters, a CR, LF or NUL anywhere, a middle parameter that is empty,
    holds a space or starts with ``:``, a source with a space, an invalid tag key, a NUL
    in a tag value (IRCv3 has no escape for it), or text that is not encodable as UTF-8
    (a lone surrogate). No length limit is applied here: use :func:`split_text` for chat
    text.
    """
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"bad IRC command {command!r}")
    if len(params) > MAX_PARAMS:
        raise ValueError(f"{len(params)} parameters, at most {MAX_PARAMS} allowed")
    parts: list[str] = []
    if tags:
        items = []
        for key, value in tags.items():
            if not _TAG_KEY.fullmatch(key):
                raise ValueError(f"bad tag key {key!r}")
            if value and "\0" in value:
                raise ValueError(f"NUL in the value of tag {key!r}")
            items.append(f"{key}={escape_tag_value(value)}" if value else key)
        parts.append("@" + ";".join(items))
    if source is not None:
        if not source or " " in source or _FORBIDDEN.search(source):
            raise ValueError(f"bad source {source!r}")
        parts.append(":" + source)
    parts.append(command)
    for k, param in enumerate(params):
        if _FORBIDDEN.search(param):
            raise ValueError(f"CR, LF or NUL in parameter {param!r}")
        if k == len(params) - 1:
            if colon or not param or param[0] == ":" or " " in param:
                param = ":" + param
        elif not param or param[0] == ":" or " " in param:
            raise ValueError(f"middle parameter {param!r} is empty, has a space or a ':'")
        parts.append(param)
    return (" ".join(parts) + "\r\n").encode("utf-8")


# --------------------------------------------------------------------------- text


def split_text(prefix_bytes_len: int, text: str, limit: int = DEFAULT_MAX_LINE) -> list[str]:
    """Split chat text so that every line ``prefix + piece + "\\r\\n"`` fits ``limit`` bytes.

    ``prefix_bytes_len`` is the UTF-8 length of everything before the text, colon
    included (``:nick!user@host PRIVMSG #chan :``). The pieces are
    :func:`chatd.core.text.split_utf8`'s: whole characters, most words kept whole,
    ``"".join(pieces) == text``. Raises ``ValueError`` when the budget is under 4 bytes
    (one character might not fit) — the caller's prefix is then wrong, not the peer's text.
    """
    budget = limit - prefix_bytes_len - 2
    if budget < 4:
        raise ValueError(f"prefix of {prefix_bytes_len} bytes leaves {budget} for text")
    return split_utf8(text, budget)


# --------------------------------------------------------------------------- CTCP

_CTCP_BAD = re.compile("[\x01\r\n\0]")


def parse_ctcp(text: str) -> tuple[str, str] | None:
    """``"\\x01ACTION waves\\x01"`` → ``("ACTION", "waves")``; ``None`` if not CTCP.

    The command is upper-cased; the arguments are everything after the first space
    (``""`` if none). A missing closing ``\\x01`` is tolerated, as clients do.
    """
    if len(text) < 2 or text[0] != "\x01":
        return None
    body = text[1:-1] if text.endswith("\x01") else text[1:]
    command, _, args = body.partition(" ")
    if not command or "\x01" in command:
        return None
    return command.translate(_ASCII_UPPER), args


def ctcp(command: str, args: str = "") -> str:
    """``ctcp("ACTION", "waves")`` → ``"\\x01ACTION waves\\x01"``; ``ValueError`` on a bad part."""
    if not command or " " in command or _CTCP_BAD.search(command) or _CTCP_BAD.search(args):
        raise ValueError(f"bad CTCP {command!r} {args!r}")
    return f"\x01{command} {args}\x01" if args else f"\x01{command}\x01"
