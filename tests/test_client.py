"""chatd-client driven through a pipe as a subprocess, against a real server."""

from __future__ import annotations

import subprocess
import sys

from chatd.client import printable
from chatwire import Server, chatd_env


def run_client(server: Server, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "chatd.client", "--port", str(server.port), *args],
        input=stdin,
        capture_output=True,
        timeout=30,
        env=chatd_env(),
    )


def test_piped_session_sends_and_exits_cleanly(start_server) -> None:
    server = start_server("reactor")
    (bob,) = server.room("bob")
    proc = run_client(server, b"alice\nhello from a pipe\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "alice" in out and "#lobby" in out
    assert bob.expect("hello from a pipe")[-1] == "alice: hello from a pipe"


def test_input_ending_without_quit_still_exits_zero(start_server) -> None:
    server = start_server("reactor")
    (bob,) = server.room("bob")
    proc = run_client(server, b"carol\nbye without quit")
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("bye without quit")[-1] == "carol: bye without quit"


def test_control_characters_from_the_server_are_shown_visibly(start_server) -> None:
    # The server refuses such lines, so check the renderer directly as well.
    assert printable(b"\x1b[2Jx\x07\x9b") == "^[[2Jx^G\ufffd"
    assert printable("a\u009bb".encode()) == "a<U+009B>b"
    assert printable(b"tab\there") == "tab\there"


def test_connection_refused_is_a_clear_error(start_server) -> None:
    server = start_server("reactor")
    port = server.port
    server.stop()
    proc = subprocess.run(
        [sys.executable, "-m", "chatd.client", "--port", str(port)],
        input=b"",
        capture_output=True,
        timeout=30,
        env=chatd_env(),
    )
    assert proc.returncode != 0
    assert b"cannot connect" in proc.stderr and b"Traceback" not in proc.stderr


def test_server_going_away_is_reported(start_server) -> None:
    server = start_server("reactor")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd.client", "--port", str(server.port), "--nick", "dave"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=chatd_env(),
    )
    assert proc.stdout is not None
    while b"dave" not in proc.stdout.readline():
        pass
    server.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert b"shutting down" in out
    assert b"closed" in err
