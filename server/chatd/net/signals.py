"""The stop and reload signals between "listening on" and the engine's handlers.

``chatd`` prints its ``listening on`` lines before the engine starts, and a supervisor
(or a test) may send SIGTERM the moment it reads them. Until the engine has installed
its handlers, SIGTERM would kill the process with the default action: no goodbye, exit
status -15. So the command line holds SIGINT and SIGTERM (:func:`hold`) before it starts
anything, and each engine releases them (:func:`release`) once its own handlers are in:
a signal that came in between is delivered then, and handled like any other. Holding
them before the first thread starts matters: a thread inherits the mask, so the
history's threads keep them blocked for good and a process-directed SIGTERM can only
be taken by the main thread, whose handler is Python's. SIGHUP (reload) is held the
same way: its default action ends the process, and a service manager may send it as
soon as the process is up.
"""

from __future__ import annotations

import signal

HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def hold() -> None:
    """Block the stop and reload signals in this thread (and the threads it starts)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


def release() -> None:
    """Unblock them; one that arrived while held is delivered now (the engine's
    handlers must be in before)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
