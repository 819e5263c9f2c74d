"""The stop signals between "listening on" and the engine's handlers.

``chatd`` prints its ``listening on`` lines before the engine starts, and a supervisor
(or a test) may send SIGTERM the moment it reads them. Until the engine has installed
its handlers, SIGTERM would kill the process with the default action: no goodbye, exit
status -15. So the command line holds SIGINT and SIGTERM (:func:`hold`) before it starts
anything, and each engine releases them (:func:`release`) once its own handlers are in:
a signal that came in between is delivered then, and handled like any other. Holding
them before the first thread starts matters: a thread inherits the mask, so the
history's threads keep them blocked for good and a process-directed SIGTERM can only
be taken by the main thread, whose handler is Python's.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def hold() -> None:
    """Block the stop signals in this thread (and the threads it starts) for now."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release() -> None:
    """Unblock the stop signals; one that arrived while held is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
