"""Socket settings and checks shared by the three engines."""

from __future__ import annotations

import errno
import logging
import resource
import select
import socket
import struct

from chatd.net.transport import DisconnectReason

log = logging.getLogger("chatd")

#: accept() errors that mean "out of descriptors or memory": back off, don't spin.
FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: TCP keepalive: first probe after this many idle seconds, then every 10 s, 6 tries.
KEEPALIVE_IDLE = 60


#: A graceful close shuts our side, then reads and discards what the peer still sends
#: for up to this long (or until its EOF) before closing. Closing a socket with unread
#: input makes the kernel answer RST and throw away output it has not sent yet: the
#: goodbye, the 464 and ERROR of a wrong password, the tail of a reply to a reader with a
#: small window (Apache's "lingering close", for the same reason).
LINGER_SECONDS = 2.0
#: ... and for up to this many bytes: a peer that keeps sending gets its reset sooner.
LINGER_BYTES = 1 << 20
#: Close reasons that mean the peer closed first (its EOF or a reset; no reason yet is an
#: EOF): it has nothing left to send, so lingering would only hold a thread or a task.
_PEER_CLOSED = frozenset({None, DisconnectReason.EOF, DisconnectReason.RESET})


def lingers(reason: DisconnectReason | None) -> bool:
    """Whether a graceful close for ``reason`` should linger: only when we closed first."""
    return reason not in _PEER_CLOSED


def configure_socket(sock: socket.socket) -> None:
    """Low latency for small lines, and keepalive so dead peers are found eventually."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)


def reset_on_close(sock: socket.socket) -> None:
    """Make ``close()`` send RST and free the kernel's send buffer at once.

    Used for clients dropped for not reading: otherwise the kernel would keep up to a
    few MiB per dropped socket and trickle them out to a peer that is not reading.
    A socket closed already is left alone (uvloop's stand-in for the socket of a closed
    transport raises ValueError rather than OSError).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except (OSError, ValueError):
        pass


_LINGER_ZERO = struct.pack("ii", 1, 0)


def raise_fd_limit() -> None:
    """Raise the soft open-file limit to the hard one: each client costs a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit: %s", exc)


def peer_error(sock: socket.socket) -> int:
    """The socket's pending error (e.g. ECONNRESET after a reset), or 0.

    An engine that is not reading a connection (flood control holds it back) would not
    otherwise notice that the peer reset it, and would go on relaying the lines it
    already buffered from a client that is gone.
    """
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as exc:
        return exc.errno or -1


def full_send_buffers(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets whose send buffer is full right now (one ``poll``, any number of fds).

    A blocking ``send`` to one of them would wait for its peer to read.
    """
    poller = select.poll()
    by_fd: dict[int, socket.socket] = {}
    for sock in socks:
        fd = sock.fileno()
        if fd >= 0:
            by_fd[fd] = sock
            poller.register(fd, select.POLLOUT)
    writable = {fd for fd, events in poller.poll(0) if events & select.POLLOUT}
    return [sock for fd, sock in by_fd.items() if fd not in writable]
