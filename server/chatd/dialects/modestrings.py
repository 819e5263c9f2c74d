"""Mode changes and room modes as the ``+o-v bob amy`` strings both dialects show.

The hub keeps modes as data (:class:`~chatd.core.events.ModeChange`, a room's fields);
how they read is the dialects' business, and both read them the IRC way.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatd.core.events import ModeChange
from chatd.core.model import Room


def mode_line(changes: Iterable[ModeChange]) -> tuple[str, list[str]]:
    """``+o-v``, ``["bob", "amy"]``: one mode string for a list of changes."""
    modes = ""
    args: list[str] = []
    sign = ""
    for change in changes:
        if change.sign != sign:
            modes += change.sign
            sign = change.sign
        modes += change.char
        if change.arg is not None:
            args.append(change.arg)
    return modes, args


def room_modes(room: Room, show_key: bool = True) -> tuple[str, list[str]]:
    """``("+ntk", ["key"])``: the flags and arguments ``MODE #room`` shows."""
    modes = "+" + room.modes
    args: list[str] = []
    if room.password is not None:
        modes += "k"
        args.append(room.password if show_key else "*")
    if room.limit is not None:
        modes += "l"
        args.append(str(room.limit))
    return modes, args
