"""Wire formats. Each dialect is a module the engines never name; this registry is how
the command line and the service find them by name."""

from __future__ import annotations

from chatd.dialects import irc, line
from chatd.dialects.base import Dialect

DIALECTS: dict[str, Dialect] = {
    line.DIALECT.name: line.DIALECT,
    irc.DIALECT.name: irc.DIALECT,
}
