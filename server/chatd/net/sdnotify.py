"""systemd's notification protocol (``sd_notify``), in the standard library only.

Why: under ``Type=notify`` systemd does not take a started process for a ready service;
it waits for the service to say so. ``systemctl start chatd`` then returns once chatd
listens (not merely once it was exec'ed), units ordered ``After=chatd.service`` start
when they can connect, and a chatd that fails before listening fails the start. The
same channel says that a reload is under way (``RELOADING=1``) and that a stop has begun
(``STOPPING=1``), and carries a one-line ``STATUS=`` that ``systemctl status`` shows.

The protocol (sd_notify(3)): the service manager puts the address of a datagram socket
in ``$NOTIFY_SOCKET``, a file system path, or an abstract socket when it starts with
``@`` (the ``@`` stands for the leading NUL byte). A notification is one datagram of
newline-separated ``NAME=value`` assignments. Without ``$NOTIFY_SOCKET`` (started by
hand, in a container, by a test) there is nobody to tell and nothing is sent.

Why never block: chatd's reactor is single-threaded, and a notification is sent from
it (a reload happens between two loop turns). The socket is non-blocking, so when the
receiver's queue is full the datagram is dropped and :func:`notify` returns False; a
notification is advice to the service manager, never worth stalling every client for.
Any other failure to send (no such socket, refused) is likewise a False, not an
exception: whether systemd heard us must not decide whether chatd serves.

Only the main process's notifications count (``NotifyAccess=main``, the default): a
process that forks workers says ``READY=1`` itself, once they all listen.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("chatd.sdnotify")

#: The environment variable that holds the notification socket's address.
NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one datagram to
    ``$NOTIFY_SOCKET``; True if the datagram was sent.

    False, and nothing sent, without ``$NOTIFY_SOCKET`` or with an address that is
    neither a path nor ``@abstract``; False, and the datagram dropped, when the socket
    would block or cannot be reached. Each state is one ``NAME=value`` without a
    newline: anything else is a bug of the caller and raises ValueError.
    """
    for state in states:
        name, sep, _ = state.partition("=")
        if not sep or not name or "\n" in state:
            raise ValueError(f"not one NAME=value assignment: {state!r}")
    address = os.environ.get(NOTIFY_SOCKET, "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux's abstract namespace
    elif not address.startswith("/"):
        return False  # unset, empty, or a kind of address this does not speak (vsock:)
    message = "\n".join(states).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message, address)
    except OSError as exc:  # BlockingIOError (full) included
        log.debug("sd_notify to %r failed: %s", address, exc)
        return False
    return True


def status_line(text: str) -> str:
    """``STATUS=text`` with any line break turned into a space (one assignment)."""
    return "STATUS=" + " ".join(text.splitlines())


def ready(status: str = "") -> bool:
    """The service is up (it listens), or has finished reloading: ``READY=1``, with
    ``STATUS=status`` when given."""
    return notify("READY=1", *((status_line(status),) if status else ()))


def reloading() -> bool:
    """A reload has begun: ``RELOADING=1`` and ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, in
    microseconds). ``Type=notify-reload`` (systemd 253+) wants the timestamp to tell this
    reload from an earlier one; plain ``Type=notify`` ignores it. Follow it with
    :func:`ready` when the reload is done, or systemd waits for the end of the reload."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    """The service has begun to stop: ``STOPPING=1``."""
    return notify("STOPPING=1")
