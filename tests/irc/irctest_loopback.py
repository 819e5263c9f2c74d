"""A pytest plugin for irctest runs: every server it starts listens on 127.0.0.1.

irctest picks each server's address with ``find_hostname_and_port()``, which binds
``("", 0)`` and so hands ``0.0.0.0`` to the controller: the server under test (ours or
ngircd) would listen on every interface. Our rule is loopback only, so this module,
loaded with ``-p irctest_loopback`` by ``run_irctest.py``, swaps that function for one
that binds ``127.0.0.1``. Clients connect to the same address they are given, so no
test sees a difference; the reference run in PINNED.md reproduces with it (see the
runner's report).
"""

from __future__ import annotations

import socket

import irctest.basecontrollers


def find_loopback_hostname_and_port() -> tuple[str, int]:
    """A free TCP port on 127.0.0.1 (free now; irctest's port lock keeps it ours)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        host, port = s.getsockname()
    return host, port


irctest.basecontrollers.find_hostname_and_port = find_loopback_hostname_and_port
