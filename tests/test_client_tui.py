"""The interactive client for real: chatd-client in a tmux pane, typed at with send-keys.

Each test starts its own tmux server (``-L`` with a unique socket, no config) whose pane
runs a small script: the client, then ``rc=<status>``, then the terminal's ``icanon``
and ``echo`` flags as ``stty`` reports them, then ``cat`` to keep the pane open and
show that the terminal reads lines normally again. The screen is read with
``capture-pane`` (``-e`` keeps the colours) and polled until it shows what a test waits
for, with a deadline; other participants are chatwire clients on real sockets.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from test_client import FakeServer

from chatd.client.look import PALETTE, nick_colour
from chatwire import SERVER_SRC, TIMEOUT, Server

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (Debian: apt-get install tmux)"
)

WIDTH, HEIGHT = 100, 24
_sockets = itertools.count()
#: The foreground colour codes tmux reports (capture-pane -e) for each palette colour.
SGR = {name: code for name, code in zip(PALETTE, [*range(31, 37), *range(91, 97)], strict=True)}
_SGR_RUN = re.compile(r"^((?:\x1b\[[\d;]*m)*)")


class Pane:
    """A tmux server of its own with one pane running chatd-client."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"chatd-client-test-{os.getpid()}-{next(_sockets)}"
        self.tmp_path = tmp_path

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        proc = subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def start(self, port: int, *args: str, pythonpath: str = str(SERVER_SRC)) -> None:
        script = self.tmp_path / f"{self.socket}.sh"
        client = shlex.join([sys.executable, "-m", "chatd.client", "--port", str(port), *args])
        script.write_text(
            f"export PYTHONPATH={shlex.quote(pythonpath)} LC_ALL=C.UTF-8\n"
            f"{client}\n"
            'echo "rc=$?"\n'
            "flags=$(stty -a | tr -s '; ' '\\n\\n' | grep -Ex -- '-?(icanon|echo)')\n"
            'echo "tty:" $flags\n'
            "exec cat\n"
        )
        # remain-on-exit keeps the pane, and what it said last, if the script ends early.
        self.tmux(
            *("start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";"),
            *("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "sh", str(script)),
        )

    def rows(self, escapes: bool = False) -> list[str]:
        """The visible rows, top to bottom, without trailing spaces."""
        out = self.tmux("capture-pane", "-p", *(["-e"] if escapes else []))
        return [row.rstrip() for row in out.split("\n")[:HEIGHT]]

    def wait_for(self, condition: Callable[[list[str]], bool], escapes: bool = False) -> list[str]:
        """Poll the screen (capture-pane only reads) until ``condition`` holds."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            rows = self.rows(escapes)
            if condition(rows):
                return rows
            if time.monotonic() > deadline:
                shown = "\n".join(rows)
                raise AssertionError(f"the screen never showed what was expected:\n{shown}")
            time.sleep(0.05)

    def shows(self, text: str) -> list[str]:
        return self.wait_for(lambda rows: any(text in row for row in rows))

    def bottom_is(self, text: str) -> list[str]:
        return self.wait_for(lambda rows: rows[-1] == text)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def client_pid(self) -> int:
        shell = psutil.Process(int(self.tmux("display-message", "-p", "#{pane_pid}")))
        deadline = time.monotonic() + TIMEOUT
        while not (children := shell.children()):
            assert time.monotonic() < deadline, "the client did not start"
            time.sleep(0.05)
        return children[0].pid

    def kill(self) -> None:
        """Stop this tmux server and remove its socket (kill-server leaves it behind)."""
        if TMUX is None:
            return
        found = subprocess.run(
            [TMUX, "-L", self.socket, "display-message", "-p", "#{socket_path}"],
            capture_output=True,
            text=True,
        )
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True)
        if found.returncode == 0 and found.stdout.strip():
            Path(found.stdout.strip()).unlink(missing_ok=True)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    p = Pane(tmp_path)
    yield p
    p.kill()


def assert_exited(pane: Pane, status: int) -> list[str]:
    """The client exited with ``status``, and left the terminal in line mode with echo,
    reading normally. The screen at the client's exit."""
    rows = pane.wait_for(lambda rows: any(row.startswith("tty: ") for row in rows))
    assert f"rc={status}" in rows
    tty = next(row for row in rows if row.startswith("tty: "))
    assert tty.split()[1:] == ["icanon", "echo"], tty
    pane.type("typed after exit")
    pane.keys("Enter")
    # Once echoed by the terminal itself, once written back by cat.
    pane.wait_for(lambda rows: sum(row == "typed after exit" for row in rows) == 2)
    return rows


def chat_pane(pane: Pane, server: Server, *args: str) -> None:
    pane.start(server.port, "--nick", "alice", *args)
    pane.bottom_is("alice #lobby>")


# --------------------------------------------------------------------------- typing


def test_typed_text_survives_incoming_lines_and_is_sent_exactly(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    bob = server.client("bob")
    pane.shows("* bob joined #lobby")
    pane.type("half typed, ")
    pane.bottom_is("alice #lobby> half typed,")
    for i in range(3):
        bob.send(f"incoming {i}")
    # Keys and lines interleaved, a key at a time: any key the terminal echoed while a
    # line was printed would show up in the output, and twice on the screen.
    for i, key in enumerate("and more", start=3):
        pane.type(key)
        bob.send(f"incoming {i}")
    rows = pane.wait_for(
        lambda rows: "bob: incoming 10" in rows and rows[-1] == "alice #lobby> half typed, and more"
    )
    first = rows.index("bob: incoming 0")
    assert rows[first : first + 11] == [f"bob: incoming {i}" for i in range(11)]
    assert first + 11 == len(rows) - 1  # all above the input line
    assert sum("half typed" in row for row in rows) == 1
    pane.keys("Enter")
    assert bob.expect("^alice: ")[-1] == "alice: half typed, and more"
    # Your own line, as the room sees it, above the cleared prompt (waited for together,
    # as one screen read can come between two redraws).
    pane.wait_for(lambda rows: rows[-2:] == ["alice: half typed, and more", "alice #lobby>"])


def test_up_and_down_recall_history(pane: Pane, start_server: Callable[..., Server]) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    bob = server.client("bob")
    # Each line typed as soon as the last one reached bob: while the client still shows
    # it and sets up the next prompt, which is when a terminal left in cooked mode would
    # echo the new keys at the cursor (and the next prompt would be drawn after them).
    for line in ("first line", "second line", "third line"):
        pane.type(line)
        pane.keys("Enter")
        assert bob.expect("^alice: ")[-1] == f"alice: {line}"
    said = ["alice: first line", "alice: second line", "alice: third line"]
    rows = pane.wait_for(lambda rows: rows[-4:] == [*said, "alice #lobby>"])
    assert sum("line" in row for row in rows) == 3
    pane.keys("Up")
    pane.bottom_is("alice #lobby> third line")
    pane.keys("Up")
    pane.bottom_is("alice #lobby> second line")
    pane.keys("Up")
    pane.bottom_is("alice #lobby> first line")
    pane.keys("Down")
    pane.bottom_is("alice #lobby> second line")
    pane.keys("Up", "Enter")
    assert bob.expect("^alice: ")[-1] == "alice: first line"


def test_tab_completes_a_nick_and_a_command(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    bob = server.client("bob")
    pane.shows("* bob joined #lobby")
    pane.type("bo")
    pane.keys("Tab")
    pane.bottom_is("alice #lobby> bob:")
    pane.type("hi")
    pane.keys("Enter")
    assert bob.expect("^alice: ")[-1] == "alice: bob: hi"
    pane.type("/jo")
    pane.keys("Tab")
    pane.bottom_is("alice #lobby> /join")
    pane.type("#side")
    pane.keys("Enter")
    # The prompt follows the room. Both are waited for together: a screen read as soon
    # as the prompt changed can come between two redraws (a CI run caught the new prompt
    # with the rest of the screen blank).
    pane.wait_for(lambda rows: rows[-1] == "alice #side>" and "* you joined #side (1 here)" in rows)
    bob.expect(r"^\* alice left #lobby$")


# --------------------------------------------------------------------------- leaving


def test_ctrl_d_leaves_and_restores_the_terminal(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    bob = server.client("bob")
    pane.shows("* bob joined #lobby")
    pane.keys("C-d")
    rows = assert_exited(pane, 0)
    bob.expect(r"^\* alice quit")
    assert "* bye" in rows


def test_quit_command_leaves_with_status_0(pane: Pane, start_server: Callable[..., Server]) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    bob = server.client("bob")
    pane.shows("* bob joined #lobby")
    pane.type("/quit see you")
    pane.keys("Enter")
    assert_exited(pane, 0)
    assert bob.expect(r"^\* alice quit")[-1] == "* alice quit (see you)"


def test_sigterm_restores_the_terminal(pane: Pane, start_server: Callable[..., Server]) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    pane.type("half a line")
    pane.bottom_is("alice #lobby> half a line")
    os.kill(pane.client_pid(), signal.SIGTERM)
    assert_exited(pane, 128 + signal.SIGTERM)


def test_a_lost_connection_says_so_and_exits_1(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    chat_pane(pane, server)
    server.stop()
    rows = assert_exited(pane, 1)
    assert "* server shutting down: please reconnect" in rows
    assert "-!- server closed the connection; use --reconnect to retry" in rows


def test_reconnect_keeps_the_half_typed_line_and_rejoins(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    port = server.port
    chat_pane(pane, server, "--reconnect")
    pane.type("/join #side")
    pane.keys("Enter")
    pane.bottom_is("alice #side>")
    server.stop()
    pane.bottom_is("(disconnected) alice #side>")
    pane.type("draft")
    rows = pane.bottom_is("(disconnected) alice #side> draft")
    assert any(re.fullmatch(r"-!- reconnecting in \d+\.\d s \(attempt 1\)", r) for r in rows)
    server = start_server("reactor", "--port", str(port))
    rows = pane.bottom_is("alice #side> draft")
    assert any(row.startswith("-!- connected to 127.0.0.1:") for row in rows)
    bob = server.client("bob")
    bob.send("/join #side")
    bob.expect("you joined #side")
    pane.type(" after the restart")
    pane.keys("Enter")
    assert bob.expect("^alice: ")[-1] == "alice: draft after the restart"


# --------------------------------------------------------------------------- looks


def _fg(row: str) -> int:
    """The foreground colour code in effect at a row's first character."""
    codes = [int(c) for c in re.findall(r"\d+", _SGR_RUN.match(row).group(1))]  # type: ignore[union-attr]
    colours = [c for c in codes if 30 <= c <= 37 or 90 <= c <= 97]
    assert colours, repr(row)
    return colours[-1]


def test_nick_colours_are_stable_per_nick(pane: Pane, start_server: Callable[..., Server]) -> None:
    assert nick_colour("bob") != nick_colour("carol")
    server = start_server("reactor")
    chat_pane(pane, server)
    bob, carol = server.client("bob"), server.client("carol")
    for i in range(2):
        bob.send(f"bob says {i}")
        bob.ping()  # in order on screen: bob, carol, bob, carol
        carol.send(f"carol says {i}")
        carol.ping()

    def plain(rows: list[str]) -> list[str]:
        return [re.sub(r"\x1b\[[\d;]*m", "", row) for row in rows]

    rows = pane.wait_for(lambda rows: "carol: carol says 1" in plain(rows), escapes=True)
    pairs = list(zip(rows, plain(rows), strict=True))
    bobs = [row for row, text in pairs if text.startswith("bob: ")]
    carols = [row for row, text in pairs if text.startswith("carol: ")]
    assert len(bobs) == len(carols) == 2
    assert {_fg(row) for row in bobs} == {SGR[nick_colour("bob")]}
    assert {_fg(row) for row in carols} == {SGR[nick_colour("carol")]}


def test_timestamps_prefix_lines(pane: Pane, start_server: Callable[..., Server]) -> None:
    server = start_server("reactor")
    chat_pane(pane, server, "--timestamps")
    bob = server.client("bob")
    bob.send("what time is it")
    rows = pane.shows("bob: what time is it")
    assert any(re.fullmatch(r"\d\d:\d\d \* you are alice, in #lobby .*", row) for row in rows)
    assert any(re.fullmatch(r"\d\d:\d\d bob: what time is it", row) for row in rows)
    assert any(re.fullmatch(r"\d\d:\d\d -!- connecting to .*", row) for row in rows)


def test_history_is_completed_and_drawn_dimmed_with_its_time(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    bob = server.client("bob")
    bob.send("hello alice, from before")
    bob.ping()
    chat_pane(pane, server)
    pane.type("/hist")
    pane.keys("Tab")
    pane.bottom_is("alice #lobby> /history")
    pane.keys("Enter")
    rows = pane.shows("* end of history of #lobby")
    assert "* history of #lobby (1 line, times in UTC):" in rows
    said = [row for row in rows if row.endswith("bob: hello alice, from before")]
    assert len(said) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d bob: .*", said[0])
    coloured = pane.rows(escapes=True)
    row = next(r for r in coloured if "from before" in r)
    # Dimmed (bright black) after the nick's colour, and not bold: not drawn as a mention.
    assert row.endswith("\x1b[90m: hello alice, from before"), repr(row)
    bob.send("hello alice, live")
    rows = pane.shows("bob: hello alice, live")
    live = next(r for r in pane.rows(escapes=True) if "alice, live" in r)
    assert re.search(r"\x1b\[[\d;]*\b1m[^\x1b]*hello alice, live", live)  # live: a mention


def test_control_characters_stay_visible(pane: Pane) -> None:
    evil = "eve: \x1b[31mred\x07 \u009b2J\n* \x1b]0;pwned\x07\n".encode()
    with FakeServer(after_nick=evil) as fake:
        pane.start(fake.port, "--nick", "alice")
        rows = pane.shows("eve: ^[[31mred^G <U+009B>2J")
        assert "* ^[]0;pwned^G" in rows
        coloured = pane.rows(escapes=True)
        row = next(r for r in coloured if "red" in r and "eve" in r)
        assert "\x1b[7m^[" in row  # drawn in reverse video, apart from typed text


def test_without_prompt_toolkit_it_falls_back_to_plain_lines(
    pane: Pane, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    hide = tmp_path / "hide" / "prompt_toolkit"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    server = start_server("reactor")
    pane.start(server.port, pythonpath=f"{hide.parent}{os.pathsep}{SERVER_SRC}")
    pane.shows(
        "chatd-client: plain mode: the interactive client needs prompt_toolkit: "
        "pip install 'chatd[tui]'"
    )
    pane.shows("* please choose a nickname")
    pane.type("alice")
    pane.keys("Enter")
    pane.shows("* you are alice, in #lobby (1 here); /help lists commands")
    pane.keys("C-d")
    assert_exited(pane, 0)


def test_plain_flag_keeps_the_plain_client_on_a_terminal(
    pane: Pane, start_server: Callable[..., Server]
) -> None:
    server = start_server("reactor")
    pane.start(server.port, "--plain", "--nick", "alice")
    rows = pane.shows("* you are alice, in #lobby (1 here); /help lists commands")
    assert rows[0] == "* welcome to chatd"  # no prompt at the bottom, no status line
    assert not any("alice #lobby>" in row or "-!-" in row for row in rows)
    pane.type("/quit")
    pane.keys("Enter")
    assert_exited(pane, 0)
