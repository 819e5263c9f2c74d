"""HTTP and WebSocket: the browser's way in (``--http-port``, ``--https-port``).

A layer, like TLS, between the engines and the dialects: the engines drive an
:class:`~chatd.web.http.HttpSession` through the same session contract as any dialect
session, and after a WebSocket upgrade it carries a line or IRC session over frames.
:mod:`http` answers requests and bridges frames and lines; :mod:`frames` reads and writes
frames; :mod:`metrics` renders ``/metrics``; :mod:`assets` holds the page.
"""

from __future__ import annotations

from chatd.dialects import DIALECTS
from chatd.dialects.base import Dialect
from chatd.web.http import refusal, session_factory

#: The HTTP listener's kind: engines bind it like a dialect.
DIALECT = Dialect(name="http", session=session_factory(DIALECTS), refusal=refusal)  # type: ignore[arg-type]

__all__ = ["DIALECT"]
