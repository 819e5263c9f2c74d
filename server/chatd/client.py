"""``chatd-client``: a small line client, one thread, one selector over stdin and the socket.

Interactive: type a nickname when asked, then chat. Piped: ``printf 'alice\\nhello\\n/quit\\n'
| chatd-client --port 4040`` sends every line and exits once the server has closed.

Everything the server sends is shown through :func:`printable`, which renders control
characters visibly (``^[`` for ESC), so no escape sequence from another user reaches
the terminal.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

import click

#: Control characters shown in caret notation (^@ .. ^_, ^?) except TAB.
_CARET = {i: "^" + chr(i + 64) for i in range(32) if i != 9}
_CARET[127] = "^?"
#: C1 controls (U+0080..U+009F) shown as <U+XXXX>; U+009B can start an escape sequence.
_CARET.update({i: f"<U+{i:04X}>" for i in range(0x80, 0xA0)})


def printable(line: bytes) -> str:
    """Decode one server line for display, with every control character made visible."""
    return line.decode("utf-8", errors="replace").translate(_CARET)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=4040, show_default=True)
@click.option("--nick", default=None, help="Send this nickname first.")
@click.option(
    "--linger",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="After input ends, seconds to wait for the server to close.",
)
def main(host: str, port: int, nick: str | None, linger: float) -> None:
    """Connect to a chatd server and chat through stdin/stdout."""
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        raise click.ClickException(
            f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    code = Session(sock, sys.stdin.fileno(), linger).run(nick)
    sys.exit(code)


class Session:
    """The client's loop: stdin lines to the socket, socket lines to stdout."""

    def __init__(self, sock: socket.socket, stdin_fd: int, linger: float) -> None:
        self.sock = sock
        self.stdin_fd = stdin_fd
        self.linger = linger
        self.selector = selectors.DefaultSelector()
        self.inbuf = b""
        self.outbuf = b""
        self.input_done = False
        self.quit_sent = False

    def run(self, nick: str | None) -> int:
        sel = self.selector
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            sel.register(self.stdin_fd, selectors.EVENT_READ)
        except (ValueError, PermissionError, OSError):  # a regular file: read it at once
            self._read_all_stdin()
        if nick:
            self.outbuf += nick.encode() + b"\n"
        while True:
            if self.outbuf:
                self._send()
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            if sel.get_key(self.sock).events != want:
                sel.modify(self.sock, want)
            timeout = self.linger if self.input_done and not self.outbuf else None
            events = sel.select(timeout)
            if not events and self.input_done:
                err("server did not close the connection; giving up")
                return 1
            for key, mask in events:
                if key.fileobj is self.sock:
                    if not mask & selectors.EVENT_READ:
                        continue
                    status = self._on_socket()
                    if status is not None:
                        return status
                elif not self.outbuf:  # read more input only once the last is sent
                    self._on_stdin()

    def _read_all_stdin(self) -> None:
        while chunk := os.read(self.stdin_fd, 65536):
            self._queue_input(chunk)
        self._end_input()

    def _on_stdin(self) -> None:
        chunk = os.read(self.stdin_fd, 65536)
        if not chunk:
            self.selector.unregister(self.stdin_fd)
            self._end_input()
        else:
            self._queue_input(chunk)

    def _queue_input(self, chunk: bytes) -> None:
        self.outbuf += chunk
        for line in chunk.splitlines():
            if line.strip().lower().split(b" ")[0] == b"/quit":
                self.quit_sent = True

    def _end_input(self) -> None:
        """No more input: half-close, so the server flushes to us and then closes."""
        self.input_done = True
        if self.outbuf and not self.outbuf.endswith(b"\n"):
            self.outbuf += b"\n"
        if not self.outbuf:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _send(self) -> None:
        """Send what the socket takes now; the rest waits for write readiness."""
        try:
            sent = self.sock.send(self.outbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            err(f"connection lost: {exc.strerror or exc}")
            sys.exit(1)
        self.outbuf = self.outbuf[sent:]
        if self.input_done and not self.outbuf:
            self._shutdown_write()

    def _on_socket(self) -> int | None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            self._show_rest()
            err(f"connection lost: {exc.strerror or exc}")
            return 1
        if not data:
            self._show_rest()
            if self.quit_sent or self.input_done:
                return 0
            err("server closed the connection")
            return 1
        self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        if lines:
            out = "".join(printable(line.rstrip(b"\r")) + "\n" for line in lines)
            sys.stdout.write(out)
            sys.stdout.flush()
        return None

    def _show_rest(self) -> None:
        if self.inbuf:
            sys.stdout.write(printable(self.inbuf) + "\n")
            sys.stdout.flush()
            self.inbuf = b""


def err(message: str) -> None:
    print(f"chatd-client: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(prog_name="chatd-client")
