"""Classifying one decoded line: a chat line, or a ``/command`` with its arguments."""

from __future__ import annotations

from dataclasses import dataclass


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
    clients): it is sent as ``/text``.
    """
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    name, _, args = line[1:].partition(" ")
    return Command(name.lower(), args.strip())
