"""IRCv3 labeled-response: the reply to a labeled command, whole, under its label.

A client with ``labeled-response`` may tag a command ``@label=X``; everything the
server sends it *because of* that command is its response, which goes out as

* ``ACK`` tagged with the label when there is nothing else (``@label=X PONG``);
* the one line, tagged with the label, when there is one;
* a ``BATCH +id labeled-response`` tagged with the label, each line tagged
  ``batch=id``, then ``BATCH -id``, when there are several (and the client has
  ``batch``; without it they go out unlabeled, which the spec allows);
* the response's own batch with the label on its ``BATCH +`` line, when the response is
  one batch already (a ``chathistory`` batch: the spec lets "an existing type applicable
  to the entire response" carry the label). A batch inside a ``labeled-response`` batch
  is nested: its ``BATCH`` lines are tagged with the outer batch, its lines keep their own.

What the response is: everything written to the client while the command runs, by the
session (numerics) and by the router (the client's own JOIN, NICK, MODE...), since the
hub publishes synchronously. While a command runs, :class:`Capture` stands in for the
session's output (``Session.out``). One exception: a chat message the client sends *to
itself* reaches it as a message, not as a response, so :attr:`Capture.passthrough` lets
that delivery through unlabeled while the echo (echo-message) is the labeled reply.

The lines are tagged after encoding: a tag is spliced into each complete line's tag
section (:func:`add_tag`), so the encoders need not know labels exist.
"""

from __future__ import annotations

from chatd.core.router import Writer
from chatd.dialects.irc.wire import encode, escape_tag_value


class Capture:
    """The output of one labeled command, collected until the command is done."""

    __slots__ = ("transport", "label", "chunks", "passthrough")

    def __init__(self, transport: Writer, label: str) -> None:
        #: The real output, for what passes through.
        self.transport = transport
        self.label = label
        self.chunks: list[bytes] = []
        #: Deliveries go straight to the transport (a message to oneself).
        self.passthrough = False

    def write(self, data: bytes) -> None:
        """What the router writes to the member while the command runs."""
        if self.passthrough:
            self.transport.write(data)
        else:
            self.chunks.append(data)


def add_tag(line: bytes, tag: bytes) -> bytes:
    """``tag`` (``b"label=x"``) put first in the tag section of one encoded line."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def response(data: bytes, label: str, server: str, batch_id: str | None) -> bytes:
    """The labeled form of ``data`` (whole lines, CR LF each) for ``label``.

    ``batch_id``: the reference to use if a batch is needed, or ``None`` when the client
    has no ``batch`` capability (several lines then go out untagged).
    """
    tag = b"label=" + escape_tag_value(label).encode()
    lines = data.split(b"\r\n")
    lines.pop()  # every line ends with CR LF: the last piece is empty
    if not lines:
        return add_tag(encode("ACK", source=server), tag)
    if len(lines) == 1:
        return add_tag(data, tag)
    if one_batch(data):
        return add_tag(data, tag)  # the batch is the response
    if batch_id is None:
        return data
    inner = b"batch=" + batch_id.encode()
    start = add_tag(encode("BATCH", "+" + batch_id, "labeled-response", source=server), tag)
    body = b"".join(
        line + b"\r\n" if _in_batch(line) else add_tag(line + b"\r\n", inner) for line in lines
    )
    return start + body + encode("BATCH", "-" + batch_id, source=server)


def one_batch(data: bytes) -> bool:
    """Whether ``data`` (whole lines) is exactly one batch, from its ``BATCH +id`` to its
    ``BATCH -id`` (batch ids are never reused on a connection)."""
    first = _batch_reference(data[: data.find(b"\r\n")])
    if first is None or first[:1] != b"+":
        return False
    end = data.rfind(b"\r\n", 0, len(data) - 2)
    return end >= 0 and _batch_reference(data[end + 2 : -2]) == b"-" + first[1:]


def _batch_reference(line: bytes) -> bytes | None:
    """``+id`` or ``-id`` if ``line`` (without CR LF) opens or closes a batch."""
    if line.startswith(b"@"):
        line = line.partition(b" ")[2]
    if line.startswith(b":"):
        line = line.partition(b" ")[2]
    command, _, rest = line.partition(b" ")
    if command != b"BATCH":
        return None
    return rest.partition(b" ")[0] or None


def _in_batch(line: bytes) -> bool:
    """Whether ``line`` already belongs to a batch (it carries a ``batch`` tag)."""
    if not line.startswith(b"@"):
        return False
    section = line[1:].partition(b" ")[0]
    return any(tag.startswith(b"batch=") for tag in section.split(b";"))
