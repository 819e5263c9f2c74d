"""chatd's own counters (``/stats``), read before and after a measurement.

Why: the run's own counters explain its figures. ``messages_in`` is the chat lines the
server read, ``writes_out`` the deliveries it queued to recipients, where a batch of
lines (everything one read of one sender held) counts once; so deliveries per
``writes_out`` is how many lines each write to a member carried, the batching every
engine does. Sends per delivery (``bench/syscount.py``) then shows what the engine's
I/O model made of those writes.

Issue 20: a reactor that gathers the events published to one room during a loop turn
delivers them to each member as one batch; chatd then counts ``fanout_batches`` (room
batches flushed) and ``fanout_events`` (events delivered through them), and events per
batch (:func:`events_per_batch`) is how many chat lines, joins or quits one append to a
member carried. A chatd without these counters simply does not report them.

The client is a separate connection in a room of its own (``#benchctl``), so it gets
none of the room's traffic; it is blocking, with a timeout, and is only used between
steps, never inside a measured window.
"""

from __future__ import annotations

import socket
import time

#: The stats reply starts with this (PROTOCOL.md: ``* stats: name=value ...``).
STATS_PREFIX = b"* stats:"


def parse_stats(line: bytes | str) -> dict[str, int]:
    """``* stats: a=1 b=2`` -> {"a": 1, "b": 2}; tokens that are not name=int are skipped."""
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    text = text.strip()
    if text.startswith(STATS_PREFIX.decode()):
        text = text[len(STATS_PREFIX) :]
    out: dict[str, int] = {}
    for token in text.split():
        name, sep, value = token.partition("=")
        if not sep:
            continue
        try:
            out[name] = int(value)
        except ValueError:
            continue
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before for every counter in after (a counter appears once non-zero)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def events_per_batch(d: dict[str, int] | None) -> float | None:
    """fanout_events / fanout_batches of a /stats delta (None: chatd has no such counters,
    or flushed no batch)."""
    if not d or not d.get("fanout_batches") or "fanout_events" not in d:
        return None
    return d["fanout_events"] / d["fanout_batches"]


class StatsClient:
    """A registered line-protocol client that asks chatd for ``/stats``."""

    def __init__(self, host: str, port: int, nick: str = "benchctl", timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self._buf = b""
        self.sock.sendall(nick.encode() + b"\n/join #benchctl\n")
        self._read_until(lambda ln: ln.startswith(b"* ") and b"#benchctl" in ln)

    def _read_until(self, want: object) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"!"):
                    raise OSError(f"chatd refused the stats client: {line[:200]!r}")
                if want(line):  # type: ignore[operator]
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chatd")
            data = self.sock.recv(65536)
            if not data:
                raise OSError("chatd closed the stats connection")
            self._buf += data

    def query(self) -> dict[str, int]:
        """The server's counters now."""
        self.sock.sendall(b"/stats\n")
        return parse_stats(self._read_until(lambda ln: ln.startswith(STATS_PREFIX)))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
