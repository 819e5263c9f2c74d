"""Redis pub/sub from a load client's side, sans-IO: the commands a publisher and a
subscriber send, and what a subscriber receives (RESP2).

No registration: a subscriber is in the "room" once the server confirms its
``SUBSCRIBE`` (:func:`confirms_subscribe`); a publisher has nothing to confirm.
"""

from __future__ import annotations

#: The channel every subscriber listens on (one "room").
CHANNEL = b"room"

#: Newlines in one pushed pub/sub message: ``*3``, ``$7``, ``message``, ``$n``, channel,
#: ``$m``, payload. A counting receiver divides its newline count by this to get
#: deliveries, so it never parses RESP on the hot path. Payloads never contain ``\\n``.
PUSH_NEWLINES = 7


def command(*args: bytes) -> bytes:
    """A Redis command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def publish(payload: bytes, channel: bytes = CHANNEL) -> bytes:
    """PUBLISH channel payload."""
    return command(b"PUBLISH", channel, payload)


def subscribe(channel: bytes = CHANNEL) -> bytes:
    """SUBSCRIBE channel."""
    return command(b"SUBSCRIBE", channel)


def push(payload: bytes, channel: bytes = CHANNEL) -> bytes:
    """The frame a subscriber receives for one PUBLISH (a RESP2 pub/sub push)."""
    return command(b"message", channel, payload)


def confirms_subscribe(line: bytes) -> bool:
    """Whether a received line (terminator stripped) is the ``subscribe`` element of the
    server's confirmation; the lines around it are RESP framing."""
    return b"subscribe" in line
