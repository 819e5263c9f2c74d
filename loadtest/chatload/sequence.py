"""Per-sender sequence checking at one receiver: each sender's messages once, in order."""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Generic, TypeVar

#: A sender's key: the Locust user's nick (``str``), the driver's token (``bytes``).
K = TypeVar("K", bound=Hashable)


class Verdict(enum.Enum):
    """Outcome of checking one message's sequence number."""

    #: The next number, or the first one seen from this sender.
    OK = "ok"
    #: Numbers were skipped: the server dropped messages.
    LOST = "lost"
    #: A number at or below the last one: delivered out of order or twice.
    REORDERED = "reordered"


_OK = (Verdict.OK, 0)
_REORDERED = (Verdict.REORDERED, 0)


class SequenceTracker(Generic[K]):
    """Per-sender sequence checking for one receiver; senders are any hashable key (the
    Locust user's nicks, the driver's sender tokens).

    The first message seen from a sender only sets the baseline (the receiver may have
    joined mid-stream); after that a jump is lost messages and a step back (or a repeat)
    a reordered one. :attr:`lost` and :attr:`reordered` keep the totals.
    """

    __slots__ = ("_last", "lost", "reordered")

    def __init__(self) -> None:
        self._last: dict[K, int] = {}
        #: Messages skipped over, summed over every gap.
        self.lost = 0
        #: Messages at or below their sender's newest one.
        self.reordered = 0

    def observe(self, sender: K, seq: int) -> tuple[Verdict, int]:
        """Check ``seq`` from ``sender``; return the verdict and how many messages it concerns.

        For ``LOST`` the count is the number skipped; otherwise it is 0. A reordered message
        does not move the expectation back, so one late message is reported once.
        """
        last = self._last.get(sender)
        if last is None or seq == last + 1:
            self._last[sender] = seq
            return _OK  # (the common case: no tuple built per message)
        if seq > last:
            self._last[sender] = seq
            self.lost += seq - last - 1
            return Verdict.LOST, seq - last - 1
        self.reordered += 1
        return _REORDERED

    def received_counts(self) -> dict[K, int]:
        """Per sender, the number of messages up to the newest one seen (``last seq + 1``).

        Compared with what the sender sent, this says how many are still missing at the end.
        """
        return {sender: last + 1 for sender, last in self._last.items()}
