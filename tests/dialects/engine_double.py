"""A stand-in for an engine, to drive dialect sessions without sockets or a subprocess.

The transport records what a session writes and asks for; the test feeds bytes and
reads lines back. Everything above the transport (session, hub, router, encoders) is the
real code, so these tests pin the dialects' behaviour exactly, in microseconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chatd.config import Config
from chatd.dialects import DIALECTS
from chatd.dialects.base import STEP_PAUSE
from chatd.net.transport import DisconnectReason
from chatd.service import ChatService


class RecordingTransport:
    """Implements :class:`chatd.net.transport.Transport` by recording."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed: tuple[DisconnectReason, str] | None = None
        self.timer: float | None = None

    def write(self, data: bytes) -> None:
        self.out += data

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.closed is None:
            self.closed = (reason, detail)

    def call_at(self, when: float) -> None:
        self.timer = when


class Peer:
    """One connected client of a :class:`World`."""

    def __init__(self, world: World, dialect: str, host: str) -> None:
        self.world = world
        self.transport = RecordingTransport()
        session = world.service.accept(DIALECTS[dialect], host, world.now)
        assert not isinstance(session, bytes), session
        self.session: Any = session
        session.connection_made(self.transport, world.now)

    def send(self, text: str) -> float | None:
        """Feed one or more lines (``\\n`` added when missing); returns process()'s result."""
        data = text if text.endswith("\n") else text + "\n"
        self.session.data_received(data.encode())
        return self.process()

    def process(self) -> float | None:
        """What an engine does: process() again after a step pause (long work, an
        expensive command), until the input is done or flood control says wait."""
        session = self.session
        delay = session.process(self.world.now)
        while delay == STEP_PAUSE and not session.paused and not session.closing:
            delay = session.process(self.world.now)
        self.settle()
        return delay

    def timer(self) -> None:
        """Fire the session's timer at the world's time."""
        self.session.on_timer(self.world.now)
        self.settle()

    def settle(self) -> None:
        """What an engine does after a turn: a connection asked to close is closed."""
        if self.transport.closed is not None and not self.session.lost:
            self.session.connection_lost(*self.transport.closed)

    def lines(self) -> list[str]:
        """What the client received since the last call, line by line, without CR LF."""
        data = bytes(self.transport.out)
        self.transport.out.clear()
        return [line.rstrip("\r") for line in data.decode().split("\n")[:-1]]

    def close(self, reason: DisconnectReason = DisconnectReason.EOF) -> None:
        self.session.connection_lost(reason)


#: The node id of every World: message ids are then known in advance (:meth:`World.msgid`).
NODE = "aaaaa"


class World:
    """A service with a fake clock and any number of peers of either dialect."""

    def __init__(self, **options: Any) -> None:
        defaults: dict[str, Any] = {
            "server_name": "irc.test",
            "flood_rate": 0.0,
            "node_id": NODE,
        }
        defaults.update(options)
        self.now = 1000.0
        self.wall = 1_800_000_000.0
        self.config = dataclasses.replace(Config(), **defaults)
        self.service = ChatService(self.config, clock=lambda: self.wall)

    def msgid(self, n: int) -> str:
        """The id of the ``n``-th line (from 0) minted while the wall clock stands still."""
        return f"{int(self.wall * 1000):011x}{n:03x}{NODE}"

    def connect(self, dialect: str = "irc", host: str = "10.0.0.1") -> Peer:
        return Peer(self, dialect, host)

    def irc(self, nick: str, caps: str = "", host: str = "10.0.0.1") -> Peer:
        """A registered IRC client (with ``caps`` negotiated), its welcome read away."""
        peer = self.connect("irc", host)
        if caps:
            peer.send(f"CAP LS 302\r\nCAP REQ :{caps}")
        peer.send(f"NICK {nick}\r\nUSER {nick} 0 * :{nick.title()} Realname")
        if caps:
            peer.send("CAP END")
        lines = peer.lines()
        assert any(f" 001 {nick} " in line for line in lines), lines
        return peer

    def line(self, nick: str, host: str = "10.0.0.2") -> Peer:
        """A registered line-dialect client in the default room, its greeting read away."""
        peer = self.connect("line", host)
        peer.send(nick)
        lines = peer.lines()
        assert any(line.startswith(f"* you are {nick},") for line in lines), lines
        return peer
