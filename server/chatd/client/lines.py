"""What a server line is: control characters made visible, and the four kinds of line.

Everything here is pure text in, text out, shared by the piped and the interactive
client. The classification follows PROTOCOL.md ("Server lines"): ``* `` notices, ``! ``
errors, ``nick: text`` chat and ``nick (private): text`` private messages. The server
stamps the sender's nick itself, so a line that parses as chat really is from that
nick; a notice, though, can be a ``/me`` action (``* nick text``), so nothing that
matters is trusted from a notice's wording alone (see :mod:`chatd.client.tracker`).

One kind of notice is told apart: a line of a ``/history`` replay (chatd's extension,
sent only when asked for), ``* #room 2027-01-15 08:00:00 amy: text`` or
``* #room 2027-01-15 08:00:00 * amy waves``, is :class:`Replayed`, never chat. Only the
server can send it: it starts with a room's name, and no nickname (so no ``/me``
action) starts with ``#``. Its first and last lines (``* history of #room (N lines,
times in UTC):``, ``* end of history of #room``) stay notices, recognised by
:func:`history_frame`; ``history`` and ``end`` are nicks the server reserves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A nickname (PROTOCOL.md, "Session"): 1 to 30 of ASCII letters, digits and
#: ``_-[]\\^{}|```, not starting with a digit or ``-``.
NICK = r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,29}"
#: A room as the server names it: ``#`` and 1 to 49 characters that are not white
#: space, ``,``, ``:`` or ``#``; nor control characters, which chatd refuses anyway, so
#: that a room name the client repeats (prompt, completion) can never carry one.
ROOM = r"#[^\s,:#\x00-\x1f\x7f-\x9f]{1,49}"

_NICK_RE = re.compile(NICK)

#: Control characters shown in caret notation (^@ .. ^_, ^?) except TAB.
_CARET = {i: "^" + chr(i + 64) for i in range(32) if i != 9}
_CARET[127] = "^?"
#: C1 controls (U+0080..U+009F) shown as <U+XXXX>; U+009B can start an escape sequence.
_CARET.update({i: f"<U+{i:04X}>" for i in range(0x80, 0xA0)})


def decode(line: bytes) -> str:
    """One line off the wire as text; bytes that are not UTF-8 become U+FFFD."""
    return line.decode("utf-8", errors="replace")


def visible(text: str) -> str:
    """``text`` with every control character (C0 but TAB, DEL, C1) made visible."""
    return text.translate(_CARET)


def printable(line: bytes) -> str:
    """Decode one server line for display, with every control character made visible."""
    return visible(decode(line))


def visible_parts(text: str) -> list[tuple[bool, str]]:
    """Split ``text`` into runs ``(is_control, shown)``, for a display that marks controls.

    ``"".join(shown for _, shown in visible_parts(t)) == visible(t)``; the interactive
    client draws the control runs in reverse video, so ``^[`` typed by someone is told
    apart from a ``^[`` that stands for a real escape character.
    """
    parts: list[tuple[bool, str]] = []
    run: list[str] = []
    for ch in text:
        shown = _CARET.get(ord(ch))
        if shown is None:
            run.append(ch)
            continue
        if run:
            parts.append((False, "".join(run)))
            run = []
        if parts and parts[-1][0]:
            parts[-1] = (True, parts[-1][1] + shown)
        else:
            parts.append((True, shown))
    if run:
        parts.append((False, "".join(run)))
    return parts


def is_nick(word: str) -> bool:
    return _NICK_RE.fullmatch(word) is not None


@dataclass(frozen=True)
class Chat:
    """``nick: text``: a message to the room you are in."""

    nick: str
    text: str


@dataclass(frozen=True)
class Private:
    """``nick (private): text``: a private message to you."""

    nick: str
    text: str


@dataclass(frozen=True)
class Notice:
    """``* text``: from the server, or a ``/me`` action (``* nick text``)."""

    text: str


@dataclass(frozen=True)
class Error:
    """``! text``: the server refused your last line."""

    text: str


@dataclass(frozen=True)
class Other:
    """Anything else (not sent by a chatd server, but shown all the same)."""

    text: str


@dataclass(frozen=True)
class Replayed:
    """A line of a ``/history`` replay: said in ``room`` at ``when`` (UTC), not now."""

    room: str
    #: ``2027-01-15 08:00:00``, in UTC, as the server sends it.
    when: str
    nick: str
    text: str
    #: A ``/me`` action (``* nick text``) rather than chat (``nick: text``).
    action: bool = False


ServerLine = Chat | Private | Notice | Error | Other | Replayed

_CHAT = re.compile(rf"({NICK}): (.*)", re.DOTALL)
_PRIVATE = re.compile(rf"({NICK}) \(private\): (.*)", re.DOTALL)
_REPLAYED = re.compile(
    rf"({ROOM}) (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) (?:({NICK}): |\* ({NICK}) )(.*)", re.DOTALL
)
_HISTORY_START = re.compile(
    rf"history of ({ROOM}) \((?:no lines|1 line|\d+ lines), times in UTC\):"
)
_HISTORY_END = re.compile(rf"end of history of ({ROOM})")


def classify(line: str) -> ServerLine:
    """Which of PROTOCOL.md's kinds of server line ``line`` (decoded, no newline) is
    (a notice that replays history is :class:`Replayed`)."""
    if line.startswith("* "):
        if m := _REPLAYED.fullmatch(line, 2):
            room, when, nick, actor, text = m.groups()
            return Replayed(room, when, nick or actor, text, action=nick is None)
        return Notice(line[2:])
    if line.startswith("! "):
        return Error(line[2:])
    if m := _PRIVATE.fullmatch(line):
        return Private(m.group(1), m.group(2))
    if m := _CHAT.fullmatch(line):
        return Chat(m.group(1), m.group(2))
    return Other(line)


def history_frame(text: str) -> str | None:
    """``"start"`` or ``"end"`` for the first or last line of a ``/history`` replay (a
    notice's text, without ``* ``), else ``None``."""
    if _HISTORY_START.fullmatch(text):
        return "start"
    if _HISTORY_END.fullmatch(text):
        return "end"
    return None


def echo_of(typed: str, nick: str) -> str | None:
    """The line the room sees for a line you typed, shown to you in its place.

    The server does not send your own chat back to you (PROTOCOL.md, "Session", 4), so
    the interactive client shows it the way everyone else sees it. Commands other than
    ``/me`` are not echoed: their effect or the server's answer shows instead.
    """
    if typed.startswith("//"):
        return f"{nick}: {typed[1:]}"
    if typed.startswith("/"):
        command, _, rest = typed.partition(" ")
        if command.lower() == "/me" and rest.strip():
            return f"* {nick} {rest.strip()}"
        return None
    return f"{nick}: {typed}"
