"""The asyncio engine drops input that arrives after a close another task asked for.

A close asked for from outside a connection's own read loop (an operator's KILL runs in
the operator's task) wakes that loop by feeding EOF to its stream reader while the
transport still reads. asyncio's ``StreamReader.feed_data`` asserts that no data follows
EOF, so bytes the client sent meanwhile, delivered before the woken loop ran, failed inside
``data_received``: asyncio logged "Fatal error: protocol.data_received() call failed" and
force-closed the transport without the goodbye (no lingering, so more input from the
client is answered with a reset), the error came back out of ``wait_closed``, ended the
connection's task ("Task exception was never retrieved") and left the connection in the
server's set for good.

When such bytes are delivered relative to the woken loop depends on the event loop, so
both orders are driven, each from callbacks in the loop's thread, where the loop's own
ordering decides rather than timing:

* ``before``: the bytes land, then the close is asked for in the next callback; the
  selector loop runs that callback ahead of the read callback for those bytes, which its
  next poll adds behind it, and the woken task comes after both;
* ``after``: the close is asked for, then the bytes land; uvloop polls (and delivers them)
  before it runs the task the close woke.

Each order failed before the fix on one loop (``before`` on asyncio's, ``after`` on
uvloop) and passed on the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
from collections.abc import Callable
from typing import Any

import pytest
from inprocess import ENGINES, serve_while, tcp_state

from chatd.config import Config, ListenerSpec
from chatd.dialects.base import Session
from chatd.engines.aio import AsyncServer
from chatd.net.transport import DisconnectReason
from chatwire import TIMEOUT, IrcClient, read_to_eof


def _kill(server: AsyncServer, nick: str) -> None:
    """An operator's KILL of ``nick``, through the hub as the KILL command does it (loop
    thread only): the victim is sent the Killed event, then its session is closed."""
    service = server.service
    hub = service.hub
    op = hub.find("op")
    if op is None:  # an operator with no connection: the hub does not care
        uid = service.mint.uid()
        op = hub.register(uid, "op", "~op", "127.0.0.1")
        hub.make_oper(uid)
    assert hub.find(nick) is not None, f"{nick} is not connected"
    hub.kill(op.uid, nick, "bye")


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("engine", [e for e in ENGINES if e.startswith("asyncio")])
def test_input_racing_a_kill_is_dropped_and_the_close_stays_clean(
    engine: str, order: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[tuple[DisconnectReason, str]] = []
    connection_lost = Session.connection_lost

    def recording(self: Session, reason: DisconnectReason, detail: str = "") -> None:
        told.append((reason, tcp_state(self.transport.sock)))  # type: ignore[attr-defined]
        connection_lost(self, reason, detail)

    monkeypatch.setattr(Session, "connection_lost", recording)
    caplog.set_level(logging.ERROR, logger="asyncio")

    def clients(server: AsyncServer, listeners: list[Any]) -> None:
        victim = IrcClient("127.0.0.1", listeners[-1].sock.getsockname()[1])
        victim.register("victim")
        loop = server.loop  # set once the server runs (it has answered by now)
        killed: concurrent.futures.Future[None] = concurrent.futures.Future()

        def step(action: Callable[[], None]) -> None:
            try:
                action()
            except BaseException as exc:
                killed.set_exception(exc)

        def kill_and_finish() -> None:
            _kill(server, "victim")
            killed.set_result(None)

        def bytes_then_kill() -> None:
            victim.sock.sendall(b"PING early\r\n")
            loop.call_soon(step, kill_and_finish)

        def kill_then_bytes() -> None:
            _kill(server, "victim")
            victim.sock.sendall(b"PING late\r\n")
            killed.set_result(None)

        first = bytes_then_kill if order == "before" else kill_then_bytes
        loop.call_soon_threadsafe(step, first)
        killed.result(TIMEOUT)
        data, closed = read_to_eof(victim.sock)
        victim.close()
        assert closed, "the server did not close the killed connection"
        assert b"ERROR :Closing Link: 127.0.0.1 (Killed (op (bye)))" in data, data
        assert b"PONG" not in data, "input after the close was handled"

        async def connections() -> int:
            return len(server.conns)

        left = asyncio.run_coroutine_threadsafe(connections(), loop).result(TIMEOUT)
        assert left == 0, "the killed connection is still in the server's set"

    listeners = (ListenerSpec("127.0.0.1", 0, "irc"),)
    service = serve_while(engine, Config(port=0, listeners=listeners), clients)
    gc.collect()  # an unretrieved task exception is logged when its task is collected
    errors = [record.getMessage() for record in caplog.records]
    assert not errors, errors[0]
    # Told once, before the peer could see the close (no FIN had left the socket).
    assert told == [(DisconnectReason.KILLED, "ESTABLISHED")]
    assert service.stats["disconnect_killed"] == 1
