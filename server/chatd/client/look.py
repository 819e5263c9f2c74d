"""How the interactive client draws lines: styled fragments, nick colours, the prompt.

Output is prompt_toolkit's "formatted text", a list of ``(style, text)`` pairs, built here
without importing prompt_toolkit (so it is tested without a terminal and without the
``tui`` extra). :data:`STYLE` maps the class names used here to colours; prompt_toolkit
turns them into escape sequences for the terminal at hand (and honours ``NO_COLOR``).

Every piece of text that came from the network passes through
:func:`chatd.client.lines.visible_parts`, so a control character is drawn as ``^[`` in
reverse video, never sent to the terminal.
"""

from __future__ import annotations

import calendar
import re
import time
import zlib
from collections.abc import Callable

from chatd.client.lines import (
    NICK,
    ROOM,
    Chat,
    Error,
    Notice,
    Other,
    Private,
    Replayed,
    classify,
    history_frame,
    is_nick,
    visible_parts,
)
from chatd.client.tracker import key

Fragments = list[tuple[str, str]]

#: Nick colours: the terminal's 12 ANSI colours that are neither black nor white, so
#: they read on dark and light backgrounds alike and follow the user's palette.
PALETTE = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)

#: Style of each class used below (prompt_toolkit ``Style.from_dict`` rules).
STYLE = {
    "stamp": "ansibrightblack",
    "nick.me": "bold",
    "mention": "bold",
    "private": "ansimagenta bold",
    "notice": "",
    "notice.mark": "ansibrightblack",
    "error": "ansired",
    "status": "ansibrightblack italic",
    # /history: replayed lines are dimmed and carry their own time, never a mention.
    "history": "ansibrightblack",
    "history.stamp": "ansibrightblack",
    "history.text": "ansibrightblack",
    "status.mark": "ansiyellow bold",
    "control": "reverse",
    "prompt": "",
    "prompt.nick": "bold",
    "prompt.room": "ansicyan bold",
    "prompt.off": "ansired bold",
}

#: What starts the client's own status lines, as in irssi: never a server line's start.
STATUS_MARK = "-!-"

_NICK_CHAR = r"A-Za-z0-9_\-\[\]\\^{}|`"
#: The rest of a notice whose first word is a nick: joins, leaves, quits, renames.
_ABOUT_NICK = re.compile(rf"(?:joined|left) {ROOM}.*|quit(?: \(.*\))?|is now known as {NICK}")


def _nobody(nick: str) -> bool:
    return False


def nick_colour(nick: str) -> str:
    """A colour per nick, the same in every session: CRC-32 of the case-folded nick.

    Python's ``hash()`` is salted per process, so it would recolour everyone on every
    start; nicks compare case-insensitively, so ``Bob`` and ``bob`` share a colour.
    """
    return PALETTE[zlib.crc32(key(nick).encode()) % len(PALETTE)]


def nick_style(nick: str, me: str | None) -> str:
    if me is not None and key(nick) == key(me):
        return "class:nick.me"
    return f"class:nick fg:{nick_colour(nick)}"


def stamp(now: float) -> str:
    """The ``--timestamps`` prefix: local hours and minutes, as irssi shows them."""
    return time.strftime("%H:%M ", time.localtime(now))


def history_stamp(when: str) -> str:
    """A replayed line's time (``2027-01-15 08:00:00``, UTC, as the server sends it) in
    local time, to the minute: ``2027-01-15 09:00 `` in Paris."""
    try:
        moment = calendar.timegm(time.strptime(when, "%Y-%m-%d %H:%M:%S"))
        return time.strftime("%Y-%m-%d %H:%M ", time.localtime(moment))
    except (ValueError, OverflowError, OSError):
        return when + " UTC "


def _text(style: str, text: str) -> Fragments:
    return [
        (f"{style} class:control" if control else style, shown)
        for control, shown in visible_parts(text)
    ]


def mentions(text: str, me: str | None) -> bool:
    """Whether ``text`` names ``me`` as a whole word (nick characters delimit words)."""
    if not me:
        return False
    pattern = rf"(?<![{_NICK_CHAR}]){re.escape(me)}(?![{_NICK_CHAR}])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def render(
    line: str, me: str | None, when: str | None = None, known: Callable[[str], bool] = _nobody
) -> Fragments:
    """One decoded server line as styled fragments (no newline).

    A notice's first word is drawn in its nick colour when the notice is about that
    nick (a join, leave, quit or rename) or when ``known`` says it is a member (a
    ``/me`` action); ``* welcome to chatd`` keeps its plain "welcome".

    A line of a ``/history`` replay is drawn dimmed, with the local time it was said at
    instead of ``when`` and without the room (its first line names it), and never as a
    mention: it is not news.
    """
    kind = classify(line)
    if isinstance(kind, Replayed):
        return _replayed(kind, me)
    out: Fragments = [("class:stamp", when)] if when else []
    if isinstance(kind, Chat):
        text_style = "class:mention" if mentions(kind.text, me) else "class:text"
        out += [(nick_style(kind.nick, me), kind.nick), ("", ": ")]
        out += _text(text_style, kind.text)
    elif isinstance(kind, Private):
        out += [(nick_style(kind.nick, me), kind.nick), ("class:private", " (private)")]
        out += [("", ": "), *_text("class:private.text", kind.text)]
    elif isinstance(kind, Notice) and history_frame(kind.text):
        out.append(("class:notice.mark", "* "))
        out += _text("class:history", kind.text)
    elif isinstance(kind, Notice):
        out.append(("class:notice.mark", "* "))
        first, sep, rest = kind.text.partition(" ")
        about = sep and is_nick(first) and first != "you"
        if about and (_ABOUT_NICK.fullmatch(rest) or known(first)):
            out += [(nick_style(first, me), first), ("class:notice", sep)]
            out += _text("class:notice", rest)
        else:
            out += _text("class:notice", kind.text)
    elif isinstance(kind, Error):
        out += _text("class:error", "! " + kind.text)
    else:
        assert isinstance(kind, Other)
        out += _text("", kind.text)
    return out


def _replayed(line: Replayed, me: str | None) -> Fragments:
    """``2027-01-15 09:00 amy: text`` or ``2027-01-15 09:00 * amy waves``, dimmed."""
    out: Fragments = [("class:history.stamp", history_stamp(line.when))]
    nick = (nick_style(line.nick, me), line.nick)
    if line.action:
        out += [("class:history", "* "), nick, ("class:history", " ")]
    else:
        out += [nick, ("class:history", ": ")]
    return out + _text("class:history.text", line.text)


def render_status(text: str, when: str | None = None) -> Fragments:
    """One of the client's own status lines: marked ``-!-`` and dimmed."""
    out: Fragments = [("class:stamp", when)] if when else []
    return [*out, ("class:status.mark", STATUS_MARK + " "), *_text("class:status", text)]


def prompt(nick: str | None, room: str | None, registered: bool, connected: bool) -> Fragments:
    """The prompt: ``alice #lobby> `` once registered, ``nickname> `` before."""
    out: Fragments = [] if connected else [("class:prompt.off", "(disconnected) ")]
    if nick and room and (registered or not connected):
        out += [("class:prompt.nick", nick), ("class:prompt", " ")]
        out += [("class:prompt.room", room), ("class:prompt", "> ")]
    else:
        out.append(("class:prompt", "nickname> "))
    return out
