"""chatload: the sans-IO load library that the Locust user (``loadtest/chat.py``) and
bench's lean driver (``bench/driver.py``) share. No sockets, no clocks: callers move
bytes and read the time, this package says what the bytes are.

* :mod:`chatload.stamp`: the message stamp ``LT <sender> <seq> <time>`` (one format for
  both), its encoder and its two readers.
* :mod:`chatload.framing`: the line splitter, the newline counter (counting receivers do
  no per-line Python work) and :class:`ProtocolError`.
* :mod:`chatload.sequence`: the per-sender sequence checker.
* :mod:`chatload.dialect`: line kinds, handshake events and the :class:`Dialect` protocol;
  :mod:`chatload.line` (chatd's line protocol), :mod:`chatload.irc` (IRC) and
  :mod:`chatload.resp` (Redis pub/sub) speak them.
* :mod:`chatload.ws`: the WebSocket client (handshake, framing, the server-frame reader).

Installed with chatd (``setup.cfg`` maps it from ``loadtest/chatload``); Locust, which
puts ``loadtest/`` on ``sys.path``, finds the same package without an install.
"""

from __future__ import annotations

from chatload.dialect import (
    Closing,
    Dialect,
    HandshakeEvent,
    Joined,
    JoinRefused,
    LineKind,
    Registered,
    RegisterRefused,
    Reply,
)
from chatload.framing import MAX_PARTIAL_LINE, Counter, LineSplitter, NewlineCounter, ProtocolError
from chatload.sequence import SequenceTracker, Verdict
from chatload.stamp import MAGIC, Message, Stamp, encode_stamp, filler, find_stamp, parse_text

__all__ = [
    "MAGIC",
    "MAX_PARTIAL_LINE",
    "Closing",
    "Counter",
    "Dialect",
    "HandshakeEvent",
    "JoinRefused",
    "Joined",
    "LineKind",
    "LineSplitter",
    "Message",
    "NewlineCounter",
    "ProtocolError",
    "RegisterRefused",
    "Registered",
    "Reply",
    "SequenceTracker",
    "Stamp",
    "Verdict",
    "encode_stamp",
    "filler",
    "find_stamp",
    "parse_text",
]
