"""The reactor frees at most FINISHES_PER_TURN closed connections per turn: shutdown,
which closes everyone at once, must still free them all without waiting for its
deadline between turns (a review found it waited, then reset the rest)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from inprocess import serve_while

from chatd.config import Config
from chatd.engines.reactor import loop
from chatwire import Client


def test_reactor_shutdown_frees_more_than_one_turns_worth_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "FINISHES_PER_TURN", 2)
    clients: list[Client] = []
    stopped: list[float] = []

    def drive(server: Any, listeners: list[Any]) -> None:
        port = listeners[0].sock.getsockname()[1]
        for i in range(8):
            c = Client("127.0.0.1", port)
            c.register(f"amy{i}")
            clients.append(c)
        stopped.append(time.monotonic())

    serve_while("reactor", Config(port=0), drive)
    took = time.monotonic() - stopped[0]
    ends = []
    for c in clients:
        try:
            c.wait_closed(5)
            ends.append("eof")
        except OSError as exc:
            ends.append(type(exc).__name__)
        c.close()
    # 8 idle clients closing at once, freed 2 per turn: no turn may wait for the shutdown
    # deadline (SHUTDOWN_FLUSH_SECONDS, 2 s), and every client gets a clean end.
    assert took < loop.SHUTDOWN_FLUSH_SECONDS / 2, f"shutdown took {took:.2f}s"
    assert ends == ["eof"] * 8, ends
