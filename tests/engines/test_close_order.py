"""Every engine tells the hub a connection has ended before its peer can see it end.

A client that saw the server close its connection and then asks on another one (irctest's
WHOWAS after a QUIT, a member count) must be answered by a hub that knows. The threaded
engine used to send its FIN first and tell the hub after, which irctest's
``testWhowasCount2`` caught once in CI. Whether the peer could have seen the close is
read from the server's own socket at the moment the hub is told: still ESTABLISHED means
no FIN has left; FIN_WAIT means it has. That is exact, where racing a second client
against the closing thread would only catch the fault now and then.
"""

from __future__ import annotations

from typing import Any

import pytest
from inprocess import ENGINES, serve_while, tcp_state

from chatd.config import Config, ListenerSpec
from chatd.dialects.base import Session
from chatd.net.transport import DisconnectReason
from chatwire import Client, IrcClient, read_to_eof


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dialect", ["line", "irc"])
def test_the_hub_learns_of_a_quit_before_the_peer_sees_the_close(
    engine: str, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (reason, the server socket's TCP state) each time the hub was told, in order
    told: list[tuple[DisconnectReason, str]] = []
    connection_lost = Session.connection_lost

    def recording(self: Session, reason: DisconnectReason, detail: str = "") -> None:
        sock = self.transport.sock  # type: ignore[attr-defined]
        told.append((reason, tcp_state(sock)))
        connection_lost(self, reason, detail)

    monkeypatch.setattr(Session, "connection_lost", recording)

    def clients(server: Any, listeners: list[Any]) -> None:
        port = listeners[-1].sock.getsockname()[1]
        for i in range(3):
            if dialect == "irc":
                irc = IrcClient("127.0.0.1", port)
                irc.register(f"amy{i}")
                irc.send("QUIT :bye")
                sock = irc.sock
            else:
                line = Client("127.0.0.1", port)
                line.register(f"amy{i}")
                line.send("/quit bye")
                sock = line.sock
            # The server closed it: the hub has been told by now.
            assert read_to_eof(sock)[1], "the server did not close after the quit"
            sock.close()

    listeners = (ListenerSpec("127.0.0.1", 0, "irc"),) if dialect == "irc" else ()
    serve_while(engine, Config(port=0, listeners=listeners), clients)
    assert told == [(DisconnectReason.QUIT, "ESTABLISHED")] * 3
