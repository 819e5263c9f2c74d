"""The client's connection life: connect, greet, relay lines, notice the end, reconnect.

Both front ends (:mod:`chatd.client.piped` and :mod:`chatd.client.tui`) drive one
:class:`Session`; they differ only in where input comes from and in the :class:`Screen`
that shows what arrives. Keeping the protocol side here means the scriptable client and
the interactive one cannot drift apart in what they send or how they end.

How a session ends, which decides the exit status:

- The user ended it (``/quit`` sent, input ended, Ctrl-D): the server is expected to
  close; when it does the exit status is 0. If it has not closed ``linger`` seconds
  after the input ended, the client gives up with status 1.
- The connection ended otherwise (server closed, reset, TLS failure): "lost". Without
  ``--reconnect`` that is status 1. With it, the client waits (:mod:`backoff`), connects
  again, re-sends ``/pass`` and the nick it last had and, once registered, ``/join``s
  the room it was in; each step is a status line. Piped input waits meanwhile; a line
  typed interactively while disconnected is refused with a status line, not queued
  (it would arrive late, out of its context).

Theory of the linger timer: the read loop runs inside ``asyncio.timeout(None)``;
ending the input reschedules that timeout to now + ``linger``, so the one pending read
is bounded without a second task or a poll.
"""

from __future__ import annotations

import asyncio
import codecs
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from chatd.client.backoff import Backoff
from chatd.client.lines import Error, classify, decode
from chatd.client.link import ConnectError, Endpoint, Link, describe, open_link
from chatd.client.tracker import Change, Tracker, key

T = TypeVar("T")

#: A server line longer than this without a newline is shown as it stands, so a
#: misbehaving server cannot make the client buffer without limit (chatd's own lines
#: are at most a few KiB: --max-line is 4096 bytes by default).
MAX_PARTIAL_LINE = 1 << 16
#: Alternative nicks tried (``nick_``, ``nick__``, ...) when a reconnect finds the old
#: nick still taken, as happens when the server has not yet noticed the lost connection.
ALT_NICK_TRIES = 3


class _UserDone(Exception):
    """The user ended the session while the client waited to reconnect."""


class Screen(Protocol):
    """Where a session's output goes."""

    def show(self, lines: Sequence[str]) -> None:
        """Server lines, decoded, without newlines (control characters still in them)."""

    def status(self, text: str) -> None:
        """One of the client's own status lines (never mistaken for a server line)."""

    def changed(self) -> None:
        """Nick, room, members or connection state changed (e.g. redraw the prompt)."""


@dataclass(frozen=True)
class Settings:
    nick: str | None = None
    password: str | None = None
    reconnect: bool = False
    #: Seconds to wait for the server to close after the input ended or /quit.
    linger: float = 10.0
    #: Ask ``/who`` on registering and on each join, to know the room for completion.
    #: Off in piped mode, where the output is exactly what the input asked for.
    auto_who: bool = False
    #: Appended to the status line of a lost connection when --reconnect is off.
    lost_hint: str = ""


class Session:
    """One user's session with a server, over as many connections as it takes."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        screen: Screen,
        backoff: Backoff | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.screen = screen
        self.tracker = Tracker()
        self.backoff = backoff or Backoff()
        self.link: Link | None = None
        #: Set while a connection is up (piped input waits on it).
        self.connected = asyncio.Event()
        self._quit_sent = False
        self._input_done = False
        #: Set once the user ended the session, to wake a reconnect wait.
        self._user_done = asyncio.Event()
        self._linger_deadline: float | None = None
        self._timer: asyncio.Timeout | None = None
        self._rejoin: str | None = None
        self._auto_nick: str | None = None
        self._alt_tries = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._out_partial = ""
        self._ends_with_newline = True

    @property
    def ending(self) -> bool:
        """Whether the user ended the session, so that a close is the expected end."""
        return self._quit_sent or self._input_done or self._user_done.is_set()

    # ----------------------------------------------------------------- connecting

    async def open(self) -> None:
        """The first connection; :class:`ConnectError` if it cannot be made."""
        self._attach(await open_link(self.endpoint), self.settings.nick)

    def _attach(self, link: Link, nick: str | None, *, auto: bool = False) -> None:
        """Adopt a new connection: ``/pass`` first (the server expects it before the
        nick), then the nick if known; ``auto`` marks a nick the user did not type now,
        which may be varied if taken."""
        self.link = link
        self.connected.set()
        self._decoder.reset()
        self._out_partial = ""
        self._ends_with_newline = True
        if self.settings.password is not None:
            link.writer.write(f"/pass {self.settings.password}\n".encode())
        if nick:
            self._write(nick + "\n")
        self._auto_nick = nick if auto else None
        self._alt_tries = 0
        self.screen.changed()

    def _detach(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link = None
        self.connected.clear()
        self.tracker.connection_lost()
        self.screen.changed()

    # ----------------------------------------------------------------- running

    async def run(self) -> int:
        """Relay server lines until the session ends; the exit status."""
        while True:
            assert self.link is not None, "open() first"
            reason = await self._pump(self.link)
            self._detach()
            if reason == "linger":
                self.screen.status("server did not close the connection; giving up")
                return 1
            if self.ending:
                return 0
            if not self.settings.reconnect:
                self.screen.status(reason + self.settings.lost_hint)
                return 1
            self.screen.status(reason)
            if not await self._reconnect():
                return 0

    async def _pump(self, link: Link) -> str:
        """Read and show lines until the connection ends; why it ended."""
        inbuf = b""
        reason = "server closed the connection"
        try:
            async with asyncio.timeout(self._linger_deadline) as timer:
                self._timer = timer
                while data := await link.reader.read(65536):
                    inbuf += data
                    *lines, inbuf = inbuf.split(b"\n")
                    if len(inbuf) > MAX_PARTIAL_LINE:
                        lines.append(inbuf)
                        inbuf = b""
                    if lines:
                        self._received(lines)
        except TimeoutError as exc:  # the linger timer, or a TCP timeout (also an OSError)
            reason = "linger" if timer.expired() else f"connection lost: {describe(exc)}"
        except (OSError, ssl.SSLError) as exc:
            reason = f"connection lost: {describe(exc)}"
        finally:
            self._timer = None
        if inbuf:
            self._received([inbuf])
        return reason

    def _received(self, raw_lines: list[bytes]) -> None:
        lines = [decode(raw.rstrip(b"\r")) for raw in raw_lines]
        changed = False
        for line in lines:
            change = self.tracker.feed(line)
            if change is not None:
                changed = True
                self._on_change(change)
            elif not self.tracker.registered:
                self._maybe_alternate_nick(line)
        self.screen.show(lines)
        if changed:
            self.screen.changed()

    def _on_change(self, change: Change) -> None:
        if change is Change.REGISTERED:
            self.backoff.reset()
            self._auto_nick = None
            room, self._rejoin = self._rejoin, None
            if room is not None and key(room) != key(self.tracker.room or ""):
                self._write(f"/join {room}\n")  # its "you joined" asks /who
            elif self.settings.auto_who:
                self._write("/who\n")
        elif change is Change.JOINED and self.settings.auto_who:
            self._write("/who\n")

    def _maybe_alternate_nick(self, line: str) -> None:
        """A nick we sent on our own was taken: try ``nick_`` (a reconnect's ghost)."""
        kind = classify(line)
        if not (isinstance(kind, Error) and "taken" in kind.text and self._auto_nick):
            return
        if self._alt_tries >= ALT_NICK_TRIES:
            self.screen.status(f"nick {self._auto_nick} is taken; type another nick")
            self._auto_nick = None
            return
        self._alt_tries += 1
        alternative = self._auto_nick[:29] + "_"
        self.screen.status(f"nick {self._auto_nick} is taken; trying {alternative}")
        self._auto_nick = alternative
        self._write(alternative + "\n")

    async def _reconnect(self) -> bool:
        """Connect again with backoff; False if the user ended the session meanwhile."""
        self._rejoin = self.tracker.room
        nick = self.tracker.nick or self.settings.nick
        while not self._user_done.is_set():
            delay = self.backoff.next_delay()
            attempt = self.backoff.attempts
            self.screen.status(f"reconnecting in {delay:.1f} s (attempt {attempt})")
            try:
                await self._unless_user_done(asyncio.sleep(delay))
                self.screen.status(f"connecting to {self.endpoint} (attempt {attempt})")
                link = await self._unless_user_done(open_link(self.endpoint))
            except ConnectError as exc:
                self.screen.status(f"attempt {attempt} failed: {exc}")
                continue
            except _UserDone:
                return False
            self.screen.status(f"connected to {self.endpoint}")
            self._attach(link, nick, auto=True)
            return True
        return False

    async def _unless_user_done(self, work: Awaitable[T]) -> T:
        """``work``'s result; :class:`_UserDone` (and ``work`` cancelled) once the user
        ended the session first."""
        task = asyncio.ensure_future(work)
        done_wait = asyncio.ensure_future(self._user_done.wait())
        try:
            await asyncio.wait({task, done_wait}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            raise _UserDone
        finally:
            done_wait.cancel()
            task.cancel()

    # ----------------------------------------------------------------- sending

    def _write(self, text: str) -> bool:
        if self.link is None:
            return False
        self.link.writer.write(text.encode())
        self._note_sent(text)
        return True

    def _note_sent(self, text: str) -> None:
        if text:
            self._ends_with_newline = text.endswith("\n")
        *lines, self._out_partial = (self._out_partial + text).split("\n")
        for line in lines:
            line = line.rstrip("\r")
            self.tracker.sent(line)
            if line.strip().split(" ")[0].lower() == "/quit":
                self._quit_sent = True

    def send_line(self, line: str) -> bool:
        """Send one line as typed; False if not connected."""
        return self._write(line + "\n")

    def send_raw(self, data: bytes) -> bool:
        """Send input bytes as they are (piped input is not re-split or re-encoded)."""
        if self.link is None:
            return False
        self.link.writer.write(data)
        self._note_sent(self._decoder.decode(data))
        return True

    async def drain(self) -> None:
        """Wait until the kernel took what was sent; a lost connection shows up in :meth:`run`."""
        if self.link is None:
            return
        try:
            await self.link.writer.drain()
        except (OSError, ssl.SSLError):
            pass

    # ----------------------------------------------------------------- ending

    def finish_input(self) -> None:
        """Piped input ended: close our half, or send ``/quit`` where TLS cannot."""
        self._input_done = True
        if self.link is not None:
            if not self._ends_with_newline:
                self._write("\n")
            if self.link.can_half_close:
                self.link.writer.write_eof()
            elif not self._quit_sent:
                self._write("/quit\n")
        self._start_linger()

    def quit(self, reason: str = "") -> None:
        """The user leaves (``/quit`` typed, Ctrl-D, a signal)."""
        if not self._quit_sent:
            self._write(f"/quit {reason}".rstrip() + "\n")
        self._user_done.set()
        self._start_linger()

    def _start_linger(self) -> None:
        if self._linger_deadline is not None:
            return
        self._linger_deadline = asyncio.get_running_loop().time() + self.settings.linger
        if self._timer is not None:
            self._timer.reschedule(self._linger_deadline)
