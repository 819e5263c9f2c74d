"""Room and user modes: the letters chatd knows, and reading a mode string.

The letters are the chat's vocabulary, shared by both dialects (a line operator types
``/mode +o bob`` as an IRC one sends ``MODE #room +o bob``). How a change is *shown*
(IRC's ``+o-v bob amy``, 324, the line dialect's ``* amy set mode ...``) is each
dialect's business.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatd.core.events import ModeChange

#: Room modes: list modes (always take an argument), a mode with an argument to set and
#: unset, one with an argument to set only, and plain flags (IRC's CHANMODES=A,B,C,D).
#: The lists: bans (``b``), ban exceptions (``e``: a matching member is not banned) and
#: invite exceptions (``I``: a matching member needs no invitation to a ``+i`` room).
#: The flags: ``C`` no CTCP requests (IRC's VERSION, PING...; actions still pass),
#: ``i`` invite-only, ``m`` moderated, ``n`` no messages from outside, ``s`` secret,
#: ``t`` only operators set the topic.
LIST_MODES = "beI"
KEY_MODES = "k"
LIMIT_MODES = "l"
FLAG_MODES = "Cimnst"
#: Modes that give a member a rank in a room: operator and voice.
PREFIX_MODES = "ov"
#: Room modes a new room starts with: only members speak, only operators set the topic.
DEFAULT_ROOM_MODES = "nt"
#: Entries each of a room's lists (bans, exceptions, invite exceptions) may hold.
MAX_LIST = 100
#: User modes: ``B`` bot (IRCv3 bot mode), ``i`` invisible, ``o`` server operator (only
#: OPER sets it), ``w`` receives WALLOPS.
USER_MODES = "Biow"
#: Mode changes with an argument one request may make (IRC's MODES=6); further ones
#: are ignored, as IRC servers do.
MAX_MODES = 6
#: Mode letters one request is read for at most: a string of thousands of letters is
#: read this far and no further (and its unknown letters answered once, by the hub).
MAX_MODE_CHANGES = 20

#: Every room mode letter.
ROOM_MODES = LIST_MODES + KEY_MODES + LIMIT_MODES + FLAG_MODES + PREFIX_MODES


def takes_arg(char: str, sign: str) -> bool:
    """Whether room mode ``char`` takes an argument when ``sign``-ed."""
    return (
        char in PREFIX_MODES
        or char in LIST_MODES
        or char in KEY_MODES
        or (char in LIMIT_MODES and sign == "+")
    )


def parse_mode_changes(modestring: str, args: list[str]) -> tuple[list[ModeChange], list[str]]:
    """``"+ob-v", ["bob", "*!*@x", "amy"]`` → changes; unknown letters are kept (refused
    later by the hub, which knows the room). At most :data:`MAX_MODE_CHANGES` letters
    are read, and at most :data:`MAX_MODES` of them take an argument.

    Returns the changes and the list-mode letters asked for without an argument (a query
    of the list, e.g. ``MODE #room +b``).
    """
    changes: list[ModeChange] = []
    queries: list[str] = []
    sign = "+"
    rest = list(args)
    with_arg = 0
    for char in modestring:
        if char in "+-":
            sign = char
            continue
        if len(changes) + len(queries) >= MAX_MODE_CHANGES:
            break
        if takes_arg(char, sign):
            if rest:
                if with_arg >= MAX_MODES:
                    continue
                with_arg += 1
                changes.append(ModeChange(sign, char, rest.pop(0)))
            elif char in LIST_MODES:
                queries.append(char)
            else:
                changes.append(ModeChange(sign, char, None))
        else:
            changes.append(ModeChange(sign, char, None))
    return changes, queries


def sorted_modes(modes: Iterable[str]) -> str:
    return "".join(sorted(modes))
