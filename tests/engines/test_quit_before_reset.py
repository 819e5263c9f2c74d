"""A ``/quit`` sent just before a close that resets counts as a quit, on the reactor,
even when the reset shows first on a write.

The client sends ``/quit bye`` and closes at once with input it has not read, so its
kernel answers with a reset. Linux still hands the server the bytes that came before
the reset, but the server may learn of the reset by a *write* first (the room's lines,
flushed before the next poll), before it has read the ``/quit``. The reactor then reads
once more before it drops the connection (``Connection._read_before_reset``). This is
the order ``test_reliability``'s ``test_clean_quit_is_never_reported_as_a_reset`` hits
about once in a hundred rounds under load; here it is made to happen every time, by
flushing before reading, with a real loopback TCP connection.
"""

from __future__ import annotations

import socket
import struct
import time

from inprocess import tcp_state

from chatd.config import Config
from chatd.dialects import DIALECTS
from chatd.engines.reactor.connection import Connection
from chatd.engines.reactor.loop import Reactor
from chatd.net.transport import DisconnectReason
from chatd.service import ChatService

#: Seconds to wait for the reset to reach the server's socket (loopback: at once).
RESET_WAIT = 5.0


def test_a_quit_read_after_a_failed_write_is_still_the_reason() -> None:
    service = ChatService(Config(port=0, flood_rate=0, data_dir=None))
    reactor = Reactor(service, [])
    ended: list[DisconnectReason] = []
    service_ended = service.ended

    def recording(session: object, reason: DisconnectReason, detail: str) -> None:
        ended.append(reason)
        service_ended(session, reason, detail)  # type: ignore[arg-type]

    service.context.ended = recording  # what the session calls when its connection ends
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
    server_sock.setblocking(False)
    session = service.accept(DIALECTS["line"], "127.0.0.1", time.monotonic())
    assert not isinstance(session, bytes)
    conn = Connection(reactor, server_sock, session)
    conn.start()
    reactor.before_sleep()  # the greeting goes out
    client.sendall(b"amy\n")
    client.settimeout(RESET_WAIT)
    greeting = b""
    while b"you are amy" not in greeting:
        conn.on_ready(1)  # EVENT_READ: the nickname
        reactor.before_sleep()
        greeting += client.recv(4096)
    # amy quits and closes at once with unread input: her kernel resets.
    conn.write(b"unread by amy\n")
    reactor.before_sleep()
    client.sendall(b"/quit bye\n")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    deadline = time.monotonic() + RESET_WAIT
    while tcp_state(server_sock) != "CLOSE":  # the reset has arrived
        assert time.monotonic() < deadline, tcp_state(server_sock)
        time.sleep(0.001)
    # The server writes before it reads: the write fails on the reset.
    conn.write(b"a room line\n")
    conn.flush()
    reactor.before_sleep()
    assert ended == [DisconnectReason.QUIT]
    assert service.stats["disconnect_quit"] == 1 and service.stats["disconnect_reset"] == 0
    reactor.selector.close()
    reactor._wake_r.close()
    reactor._wake_w.close()
