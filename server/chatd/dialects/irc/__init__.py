"""The IRC dialect: RFC 1459/2812 as modern.ircdocs.horse describes it, plus core IRCv3.

``wire`` frames and parses, ``numerics`` names the replies, ``isupport`` builds 005,
``encoder`` renders hub events, ``session`` is one client's registration and commands.
"""

from __future__ import annotations

from chatd.dialects.base import Dialect
from chatd.dialects.irc.encoder import piece_budget
from chatd.dialects.irc.session import IrcSession
from chatd.dialects.irc.wire import encode


def refusal(text: str) -> bytes:
    """What a connection refused at accept reads before the close."""
    return encode("ERROR", f"Closing Link: ({text})", colon=True)


DIALECT = Dialect(name="irc", session=IrcSession, refusal=refusal, piece_budget=piece_budget)
