"""What the reactor registers with its selector: one :class:`Handler` per socket."""

from __future__ import annotations

import selectors

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

#: Bytes read from one socket per ready event (a connection's, a lingering one's): enough
#: for a burst of ~1000 short lines in one syscall, small enough that one flooder cannot
#: hog a turn.
READ_SIZE = 64 * 1024


class Handler:
    """The data of one selector registration, which handles its socket's events itself.

    The loop calls :meth:`on_ready` with each ready key's mask and knows nothing of the
    kinds: a connection reads and flushes (:class:`~.connection.Connection`, and
    :class:`~.tls_connection.TLSConnection` through its stream), a listener's
    :class:`~.accepting.Acceptor` accepts, a :class:`~.lingering.Lingering` socket reads
    and discards, the :class:`~.loop.Wakeup` socket is drained.
    """

    __slots__ = ()

    def on_ready(self, mask: int) -> None:
        """The socket is ready for what ``mask`` says (EVENT_READ, EVENT_WRITE or both)."""
        raise NotImplementedError

    def on_ready_at_shutdown(self, mask: int) -> None:
        """Ready while shutdown drains output: only a flush or a wake-up is worth doing.

        Nothing by default (listeners and lingering sockets are gone by then).
        """
