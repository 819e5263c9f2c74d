"""Identifiers the hub mints: message ids and member ids, unique across restarts and nodes.

A message id names one line for as long as anyone may refer to it: in an IRCv3 ``msgid``
tag, in a ``CHATHISTORY ... msgid=`` reference, in a browser resuming after a reconnect.
A per-process counter from 1 repeats after every restart and collides between nodes, so
ids here are **time-ordered with a node id**, like a ULID:

``{milliseconds since 1970: 11 hex}{sequence: 3 hex}{node: 5 base-32}``

* Two ids of one node compare (as strings) in the order they were minted: the time part
  never goes backwards (a clock stepped back keeps the last time), and within one
  millisecond the sequence counts up; 4,096 ids in one millisecond borrow the next one.
* Two nodes never mint the same id: their node parts differ. A node part is random per
  process unless configured, so a restarted server is a new node as well as a later time.

Member ids (:meth:`Mint.uid`) are the node part and a counter: a member keeps its id
through nick changes, and an id is never reused, so an invitation or a ban check cached
for one connection can never apply to the next one that takes the nick.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + "abcdefghijklmnopqrstuv"  # base 32, lower case
NODE_LEN = 5
#: Most ids minted in one millisecond before the time part borrows the next one.
SEQUENCE_MAX = 0xFFF


def random_node() -> str:
    """A fresh node id: :data:`NODE_LEN` random base-32 characters."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(NODE_LEN))


def node_problem(node: str) -> str | None:
    """Why ``node`` cannot be a node id, or ``None``."""
    if len(node) != NODE_LEN or any(c not in _ALPHABET for c in node):
        return f"a node id is {NODE_LEN} characters of 0-9 and a-v"
    return None


class Mint:
    """Mints message ids and member ids for one node."""

    __slots__ = ("node", "_ms", "_seq", "_members")

    def __init__(self, node: str | None = None) -> None:
        node = node if node is not None else random_node()
        problem = node_problem(node)
        if problem:
            raise ValueError(problem)
        self.node = node
        self._ms = 0
        self._seq = 0
        self._members = 0

    def msgid(self, at: float) -> str:
        """A new message id for a line accepted at wall time ``at`` (seconds)."""
        ms = int(at * 1000)
        if ms > self._ms:
            self._ms = ms
            self._seq = 0
        else:
            self._seq += 1
            if self._seq > SEQUENCE_MAX:
                self._ms += 1
                self._seq = 0
        return f"{self._ms:011x}{self._seq:03x}{self.node}"

    def uid(self) -> str:
        """A new member id: this node's id and a counter, never reused."""
        self._members += 1
        return f"{self.node}{self._members:x}"


def msgid_time(msgid: str) -> float | None:
    """The wall time (seconds) a message id was minted at, or ``None`` if it is not one."""
    if len(msgid) != 14 + NODE_LEN:
        return None
    try:
        return int(msgid[:11], 16) / 1000
    except ValueError:
        return None
