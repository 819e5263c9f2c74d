"""The line dialect (PROTOCOL.md): framing, registration, commands and rendering.

Sans-IO like h11: :mod:`decoder` only stores what it is fed and hands out one item at a
time; :mod:`encoder` turns hub events into bytes; :mod:`session` reads commands from one
client and calls the hub; :mod:`notices` holds every notice template and the rules that
keep clients from forging them; :mod:`errors` words the hub's refusals; :mod:`history`
replays a room's stored lines (``/history``). Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from chatd.dialects.base import Dialect
from chatd.dialects.line.commands import Command, Say, parse_command
from chatd.dialects.line.decoder import DEFAULT_MAX_LINE, DecodeError, LineDecoder
from chatd.dialects.line.encoder import ENCODER, LineEncoder
from chatd.dialects.line.notices import (
    NOTICES,
    RESERVED_NICKS,
    action_forgeable,
    error,
    listing,
    notice,
)
from chatd.dialects.line.session import LineSession

DIALECT = Dialect(
    name="line",
    session=LineSession,
    refusal=error,
    reserved_nicks=RESERVED_NICKS,
    action_forgeable=action_forgeable,
)

__all__ = [
    "DEFAULT_MAX_LINE",
    "DIALECT",
    "ENCODER",
    "NOTICES",
    "RESERVED_NICKS",
    "Command",
    "DecodeError",
    "LineDecoder",
    "LineEncoder",
    "LineSession",
    "Say",
    "action_forgeable",
    "error",
    "listing",
    "notice",
    "parse_command",
]
