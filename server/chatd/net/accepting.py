"""What every engine does around ``accept()``, in one place.

* **Descriptor exhaustion is an episode, not an error per attempt.** On EMFILE/ENFILE
  Linux keeps reporting the listener readable; an engine that retries at once spins at
  100 % CPU (and Python 3.11's asyncio logs a traceback per attempt). :class:`AcceptGuard`
  says how long to stop accepting, logs once per episode and counts every failure.
* **A refused connection is told why, without waiting for it.** :func:`refuse` sends the
  dialect's refusal with one non-blocking ``send`` and closes.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter

from chatd.net.sockopts import FD_EXHAUSTED

log = logging.getLogger("chatd")

#: Pause before accepting again after EMFILE/ENFILE.
ACCEPT_BACKOFF = 0.2


class AcceptGuard:
    """Back-off and logging for failed accepts; one per listener loop."""

    __slots__ = ("stats", "logged")

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.logged = False

    def failed(self, exc: OSError) -> float | None:
        """Seconds to stop accepting (out of descriptors), or ``None``: just go on."""
        if exc.errno not in FD_EXHAUSTED:
            log.debug("accept failed: %s", exc)  # e.g. ECONNABORTED: the peer gave up
            return None
        if not self.logged:
            log.warning("accept failed (%s); pausing new connections", exc.strerror)
            self.logged = True
        self.stats["accept_fd_exhausted"] += 1
        return ACCEPT_BACKOFF

    def accepted(self) -> None:
        """An accept succeeded: the episode, if any, is over."""
        self.logged = False


def refuse(sock: socket.socket, refusal: bytes) -> None:
    """Tell a refused connection why (if its buffer takes it at once) and close it."""
    try:
        sock.send(refusal, socket.MSG_DONTWAIT)
    except OSError:
        pass
    sock.close()
