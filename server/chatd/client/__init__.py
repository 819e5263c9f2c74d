"""``chatd-client``: a terminal client for the line protocol, interactive or scriptable.

On a terminal it is an interactive chat client (:mod:`chatd.client.tui`, with the
``tui`` extra): the input line stays on the bottom row and incoming lines print above
it, with history, Tab completion, nick colours and a prompt naming your nick and room.
Piped (``printf 'alice\\nhello\\n/quit\\n' | chatd-client --port 4040``) it sends its
input as it is and prints the server's lines exactly (:mod:`chatd.client.piped`).

Every line from the network is shown through :func:`printable` (or its styled
equivalent), which renders control characters visibly (``^[`` for ESC), so no escape
sequence from another user reaches the terminal.

Modules, each with one job: :mod:`~chatd.client.lines` (kinds of server line, making
them visible), :mod:`~chatd.client.tracker` (your nick, room and its members),
:mod:`~chatd.client.session` (connecting, relaying, reconnecting),
:mod:`~chatd.client.link` (TCP and TLS), :mod:`~chatd.client.backoff`,
:mod:`~chatd.client.look` and :mod:`~chatd.client.complete` (drawing and completion,
pure), :mod:`~chatd.client.piped` and :mod:`~chatd.client.tui` (the two front ends),
:mod:`~chatd.client.cli` (options, and which front end).
"""

from chatd.client.cli import main
from chatd.client.lines import printable

__all__ = ["main", "printable"]
